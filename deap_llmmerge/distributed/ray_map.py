"""Ray: one actor per worker, for users whose cluster runs Ray (an optional extra, ``pip install ray``).

Each actor is a long-lived process that keeps what a SCOOP worker keeps between tasks (the sources mapped
once, skeletons, shared prefixes: :mod:`deap_llmmerge.scoring.evaluator`'s per-process state). A task
carries a share of genomes and the evaluator's small description; the benchmark travels once, through
Ray's object store (:func:`~.transport.share_data`). A free actor takes the next share; an actor that dies
has its share re-run on a fresh one. Without ``address`` the map starts a local Ray of ``workers`` CPUs on
first use and stops it in :meth:`RayMap.terminate`; with ``address`` (``auto``, ``HOST:PORT`` or
``ray://HOST:PORT``) it joins that cluster and leaves it running. ``device: cuda`` gives each actor a GPU.
"""

from __future__ import annotations

import collections
import logging
import random
import signal
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ..errors import ConfigError, EvaluationError
from .worker import init_worker

__all__ = ["RayMap", "MAX_RETRIES"]

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # a share whose actor died this many times stops the run (the share itself kills them)


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'deap-llmmerge[ray]' (or pip install ray)") from None
    return ray


def _wait(ray, refs: list) -> list:
    """The finished of ``refs`` (at least one). A signal handler's exception raised while Ray waits (the
    run's RunInterrupted) comes out of Ray's Cython as a SystemError around it: it is raised as it is."""
    try:
        return ray.wait(refs, num_returns=1)[0]
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if cause is None:
            raise
        raise cause from None


class _Scorer:
    """The body of a Ray actor: a worker process that scores the shares it is given."""

    def __init__(self) -> None:
        init_worker()

    def run(self, func: Callable, task: object) -> object:
        return func(task)


class RayMap:
    """``map(func, tasks)`` over ``workers`` Ray actors, results in order; see the module docstring."""

    def __init__(self, workers: int = 1, address: str | None = None, gpus_per_worker: float = 0.0) -> None:
        if workers < 1:
            raise ConfigError(f"RayMap needs at least 1 worker, got {workers}")
        self.workers = workers
        self.address = address
        self.gpus_per_worker = gpus_per_worker
        self.started_ray = False
        self.replaced_actors = 0
        self._actors: list | None = None
        self._actor_class = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_actors": None, "_actor_class": None, "started_ray": False}

    # -- starting and stopping ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or join) Ray and the actors, once; the run's random streams and signal handlers untouched."""
        if self._actors is not None:
            return
        rng = random.getstate(), np.random.get_state()  # Ray draws from them: the run's seed keeps its stream
        ray = _ray()
        if not ray.is_initialized():
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            ray_log = logging.getLogger("ray")
            level, ray_log.level = ray_log.level, logging.ERROR  # its start-up notes are not the run's log
            try:
                if self.address is None:
                    ray.init(num_cpus=self.workers, **options)
                    self.started_ray = True
                else:
                    ray.init(address=self.address, **options)
            finally:
                ray_log.setLevel(level)
            for sig, handler in handlers.items():  # Ray installs its own; the run's signal handling stays
                signal.signal(sig, handler)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        self._actor_class = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker)(_Scorer)
        self._actors = [self._actor_class.remote() for _ in range(self.workers)]
        log.info("scoring on %d Ray actors (%s)", self.workers,
                 "a local Ray" if self.started_ray else f"the Ray cluster at {self.address or 'this process joined'}")

    def close(self) -> None:
        """End the actors; stop Ray when this map started it."""
        self.terminate()

    def terminate(self) -> None:
        """End the actors now; stop Ray when this map started it (no Ray process outlives the run)."""
        if self._actors is None and not self.started_ray:
            return
        ray = _ray()
        for actor in self._actors or []:
            try:
                ray.kill(actor)
            except Exception:  # already dead, or Ray already down
                pass
        self._actors = None
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    # -- the map ------------------------------------------------------------------------------------------
    def __call__(self, func: Callable, tasks: Iterable) -> Iterator:
        self.start()
        return self._results(func, list(tasks))

    def _results(self, func: Callable, tasks: list) -> Iterator:
        ray = _ray()
        from ray.exceptions import RayActorError

        results: dict[int, object] = {}
        queue = collections.deque(range(len(tasks)))
        tries = collections.Counter()
        idle = list(self._actors)
        running: dict = {}  # object ref -> (task index, actor)
        next_out = 0
        while next_out < len(tasks):
            while queue and idle:
                index, actor = queue.popleft(), idle.pop()
                running[actor.run.remote(func, tasks[index])] = (index, actor)
            if running and next_out not in results:
                done = _wait(ray, list(running))
                for ref in done:
                    index, actor = running.pop(ref)
                    try:
                        results[index] = ray.get(ref)
                        idle.append(actor)
                    except RayActorError as exc:
                        tries[index] += 1
                        if tries[index] >= MAX_RETRIES:
                            raise EvaluationError(f"share {index} lost its Ray actor {tries[index]} times; last: "
                                                  f"{str(exc).splitlines()[0]}") from None
                        log.warning("a Ray actor died while scoring share %d; running it again on a new one", index)
                        self._actors.remove(actor)
                        fresh = self._actor_class.remote()
                        self._actors.append(fresh)
                        self.replaced_actors += 1
                        idle.append(fresh)
                        queue.appendleft(index)
            while next_out in results:
                yield results.pop(next_out)
                next_out += 1
