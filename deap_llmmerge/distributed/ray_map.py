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
import socket
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


def _check_reachable(address: str) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) that nothing answers at is a one-line error at once (Ray
    itself retries for minutes); ``auto`` is Ray's to resolve."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except ValueError:
        raise ConfigError(f"--address {address!r} is not auto, HOST:PORT or ray://HOST:PORT") from None
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


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
        self._queue: collections.deque = collections.deque()  # (tag, func, task, tries) not yet on an actor
        self._idle: list = []
        self._running: dict = {}  # object ref -> (tag, func, task, tries, actor)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_actors": None, "_actor_class": None, "started_ray": False,
                "_queue": collections.deque(), "_idle": [], "_running": {}}

    # -- starting and stopping ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or join) Ray and the actors, once; the run's random streams and signal handlers untouched."""
        if self._actors is not None:
            return
        rng = random.getstate(), np.random.get_state()  # Ray draws from them: the run's seed keeps its stream
        ray = _ray()
        if not ray.is_initialized():
            if self.address is not None:
                _check_reachable(self.address)
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            ray_log = logging.getLogger("ray")
            level, ray_log.level = ray_log.level, logging.ERROR  # its start-up notes are not the run's log
            try:
                if self.address is None:
                    ray.init(address="local", num_cpus=self.workers, **options)  # never a cluster found here
                    self.started_ray = True
                else:
                    ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = "start a local Ray" if self.address is None else f"join the Ray cluster at {self.address}"
                raise ConfigError(f"could not {where}: {str(exc).strip().splitlines()[0]}") from None
            finally:
                ray_log.setLevel(level)
            for sig, handler in handlers.items():  # Ray installs its own; the run's signal handling stays
                signal.signal(sig, handler)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        self._actor_class = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker)(_Scorer)
        self._actors = [self._actor_class.remote() for _ in range(self.workers)]
        self._idle = list(self._actors)
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
        self._queue.clear()
        self._idle, self._running = [], {}
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    # -- the map, and tasks one at a time ------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.workers

    def __call__(self, func: Callable, tasks: Iterable) -> Iterator:
        self.start()
        return self._results(func, list(tasks))

    def _results(self, func: Callable, tasks: list) -> Iterator:
        for index, task in enumerate(tasks):
            self.submit(func, task, index)
        results: dict[int, object] = {}
        for index in range(len(tasks)):
            while index not in results:
                results.update(self.wait())
            yield results.pop(index)

    def submit(self, func: Callable, task: object, tag: object) -> None:
        """Queue ``func(task)`` for the next free actor; :meth:`wait` returns it with ``tag``."""
        self.start()
        self._queue.append((tag, func, task, 0))
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            tag, func, task, tries = self._queue.popleft()
            actor = self._idle.pop()
            self._running[actor.run.remote(func, task)] = (tag, func, task, tries, actor)

    def wait(self) -> list[tuple[object, object]]:
        """``(tag, result)`` of the tasks that finished (at least one while any is queued or running)."""
        ray = _ray()
        from ray.exceptions import RayActorError

        self._dispatch()
        if not self._running:
            return []
        finished = []
        for ref in _wait(ray, list(self._running)):
            tag, func, task, tries, actor = self._running.pop(ref)
            try:
                finished.append((tag, ray.get(ref)))
                self._idle.append(actor)
            except RayActorError as exc:
                if tries + 1 >= MAX_RETRIES:
                    raise EvaluationError(f"a share lost its Ray actor {tries + 1} times; last: "
                                          f"{str(exc).splitlines()[0]}") from None
                log.warning("a Ray actor died while scoring a share; running it again on a new one")
                self._actors.remove(actor)
                fresh = self._actor_class.remote()
                self._actors.append(fresh)
                self.replaced_actors += 1
                self._idle.append(fresh)
                self._queue.appendleft((tag, func, task, tries + 1))
        self._dispatch()
        return finished
