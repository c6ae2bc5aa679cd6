"""Tasks one at a time, for the steady-state loop: ``submit(func, task, tag)``, then ``wait()`` for the
``(tag, result)`` of those that finished, with ``capacity`` tasks running at once.

One submitter per backend: in this process (each task runs at ``submit``), a process pool (a
``concurrent.futures`` pool, which says when a worker died: its tasks run again on a new pool), SCOOP
(``futures.submit``; a dead worker's task is re-sent as in the generational loop) and Ray (the
:class:`~.ray_map.RayMap` itself).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool

from ..errors import EvaluationError
from .pool import PoolMap
from .ray_map import RayMap
from .scoop import scoop_workers, uses_scoop
from .worker import init_worker

__all__ = ["submitter_for", "InProcess", "PoolSubmitter", "ScoopSubmitter", "MAX_POOL_RESTARTS"]

log = logging.getLogger(__name__)

MAX_POOL_RESTARTS = 3  # a pool whose workers died this many times in a row stops the run


class InProcess:
    """Each task runs at ``submit``, in this process."""

    capacity = 1

    def __init__(self) -> None:
        self._done: list = []

    def submit(self, func: Callable, task: object, tag: object) -> None:
        self._done.append((tag, func(task)))

    def wait(self) -> list:
        done, self._done = self._done, []
        return done


class PoolSubmitter:
    """A ``concurrent.futures`` process pool (spawn) of the pool map's size. When a worker dies, the pool
    breaks; the tasks it held run again on a new one."""

    def __init__(self, workers: int) -> None:
        self.capacity = workers
        self._executor: ProcessPoolExecutor | None = None
        self._running: dict = {}  # future -> (tag, func, task)
        self._restarts = 0

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.capacity, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=init_worker)
        return self._executor

    def submit(self, func: Callable, task: object, tag: object) -> None:
        self._running[self._pool().submit(func, task)] = (tag, func, task)

    def wait(self) -> list:
        if not self._running:
            return []
        done, _ = wait_futures(list(self._running), return_when=FIRST_COMPLETED)
        finished, lost = [], []
        for future in done:
            entry = self._running.pop(future)
            try:
                finished.append((entry[0], future.result()))
                self._restarts = 0
            except BrokenProcessPool:
                lost.append(entry)
        if lost:
            self._restart([*lost, *self._running.values()])
        return finished

    def _restart(self, tasks: list) -> None:
        self._restarts += 1
        if self._restarts > MAX_POOL_RESTARTS:
            raise EvaluationError(f"the pool's workers died {MAX_POOL_RESTARTS} times in a row while scoring")
        log.warning("a pool worker died; its %d unfinished tasks run again on a new pool", len(tasks))
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor, self._running = None, {}
        for tag, func, task in tasks:
            self.submit(func, task, tag)

    def close(self) -> None:
        """End the workers now (a task they hold is not waited for)."""
        if self._executor is not None:
            for process in list((self._executor._processes or {}).values()):
                process.terminate()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class ScoopSubmitter:
    """SCOOP's ``futures.submit``, ``capacity`` = its workers."""

    def __init__(self) -> None:
        self.capacity = scoop_workers()
        self._running: dict = {}

    def submit(self, func: Callable, task: object, tag: object) -> None:
        from scoop import futures

        self._running[futures.submit(func, task)] = tag

    def wait(self) -> list:
        from scoop import futures

        if not self._running:
            return []
        done, _ = futures.wait(list(self._running), return_when=futures.FIRST_COMPLETED)
        return [(self._running.pop(future), future.result()) for future in done]


def submitter_for(base_map: Callable) -> object:
    """The submitter of ``base_map``'s backend (in this process for the builtin map or a map it does not
    know). A pool map keeps its submitter, whose processes :meth:`PoolMap.terminate` ends."""
    if isinstance(base_map, RayMap):  # it submits and waits itself
        return base_map
    if isinstance(base_map, PoolMap):
        if base_map.submitter is None:
            base_map.submitter = PoolSubmitter(base_map.workers)
        return base_map.submitter
    if uses_scoop(base_map):
        return ScoopSubmitter()
    return InProcess()

