"""Where candidates are scored: in this process, in SCOOP workers, or in a multiprocessing pool.

Every line that knows SCOOP or the pool lives here. The rest of the package calls this interface: a map
(:func:`make_map`, :func:`chunk_count`), the worker's first steps and GPU (:mod:`.worker`), what a task
carries instead of data (:mod:`.transport`) and the heartbeats of a share (:mod:`.heartbeats`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .pool import PoolMap
from .scoop import scoop_map, scoop_workers, uses_scoop

__all__ = ["BACKENDS", "make_map", "chunk_count", "PoolMap", "scoop_map", "uses_scoop"]


BACKENDS = ("serial", "scoop", "pool")


def make_map(backend: str, workers: int = 1) -> Callable:
    if backend == "serial":
        return map
    if backend == "scoop":
        return scoop_map
    if backend == "pool":
        return PoolMap(workers)
    raise ConfigError(f"unknown map backend {backend!r}; known: {', '.join(BACKENDS)}")


def chunk_count(base_map: Callable) -> int:
    """How many shares to cut a population into for ``base_map``: one for the builtin map, two per worker for
    SCOOP and pools (a slow share does not leave a worker idle for long), one per genome otherwise."""
    if base_map is map:
        return 1
    workers = getattr(base_map, "workers", None)
    if workers is None and uses_scoop(base_map):
        workers = scoop_workers()
    return 2 * workers if workers else 1 << 30
