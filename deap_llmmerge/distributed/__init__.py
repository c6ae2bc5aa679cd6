"""Where candidates are scored: in this process, in SCOOP workers, in a multiprocessing pool or on Ray actors.

Every line that knows SCOOP, the pool or Ray lives here. The rest of the package calls this interface: a map
(:func:`make_map`, :func:`map_workers`), the worker's first steps and GPU (:mod:`.worker`), what a task
carries instead of data (:mod:`.transport`) and the heartbeats of a share (:mod:`.heartbeats`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .pool import PoolMap
from .ray_map import RayMap
from .scoop import scoop_map, scoop_workers, uses_scoop

__all__ = ["BACKENDS", "make_map", "map_workers", "min_shares", "PoolMap", "RayMap", "scoop_map", "uses_scoop",
           "uses_ray"]


BACKENDS = ("serial", "scoop", "pool", "ray")


def make_map(backend: str, workers: int = 1, address: str | None = None, gpus_per_worker: float = 0.0) -> Callable:
    """The map of ``backend``: ``address`` is a Ray cluster's (None starts a local Ray)."""
    if backend == "serial":
        return map
    if backend == "scoop":
        return scoop_map
    if backend == "pool":
        return PoolMap(workers)
    if backend == "ray":
        return RayMap(workers, address, gpus_per_worker)
    raise ConfigError(f"unknown map backend {backend!r}; known: {', '.join(BACKENDS)}")


def map_workers(base_map: Callable) -> int | None:
    """How many workers ``base_map`` scores with: 1 for the builtin map, the workers of SCOOP, a pool or
    Ray; None for a map this package does not know (each genome is then a share of its own)."""
    if base_map is map:
        return 1
    workers = getattr(base_map, "workers", None)
    if workers is None and uses_scoop(base_map):
        workers = scoop_workers()
    return workers


def min_shares(base_map: Callable) -> int | None:
    """The fewest shares a call of ``base_map`` should be cut into (None: one per worker). SCOOP's root keeps
    the last task it submits and runs it itself: given one task per worker it ran two of them one after the
    other (:mod:`deap_llmmerge.scoring.shares`), so SCOOP gets two per worker."""
    return 2 * (map_workers(base_map) or 1) if uses_scoop(base_map) else None


def uses_ray(base_map: Callable) -> bool:
    """Whether ``base_map`` scores on Ray actors."""
    return isinstance(base_map, RayMap)
