"""A ``multiprocessing`` pool of worker processes: the backend for users without SCOOP."""

from __future__ import annotations

import ast
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import ConfigError
from .worker import init_worker

__all__ = ["PoolMap"]


def _unguarded_main_line() -> int | None:
    """The line of the running ``__main__`` script that starts a pool outside ``if __name__ == "__main__":``
    (spawned workers re-import the script and would start pools of their own), or None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame = sys._getframe()
    while frame is not None and frame.f_globals.get("__name__") != "__main__":
        frame = frame.f_back
    if frame is None or path is None or frame.f_code.co_name != "<module>" or not Path(path).is_file():
        return None
    try:
        tree = ast.parse(Path(path).read_text())
    except (SyntaxError, UnicodeDecodeError):
        return None
    line = frame.f_lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and \
                node.lineno <= line <= (node.end_lineno or line):
            return None
    return line


class PoolMap:
    """A ``multiprocessing`` pool (spawn) of ``workers`` processes, for users without SCOOP.

    A script that uses one must start its work under ``if __name__ == "__main__":``: the workers
    re-import the script. Starting a pool from unguarded top-level code is refused with a ConfigError.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ConfigError(f"PoolMap needs at least 1 worker, got {workers}")
        self.workers = workers
        self._pool = None
        self.submitter = None  # the steady-state loop's pool (:mod:`.asynchronous`), made on first use

    def __call__(self, func: Callable, tasks: Iterable) -> Iterator:
        if self._pool is None:
            line = _unguarded_main_line()
            if line is not None:
                raise ConfigError(f"line {line} of {sys.modules['__main__'].__file__} starts a process pool outside "
                                  "'if __name__ == \"__main__\":'; put the script's work under that guard "
                                  "(the workers re-import the script)")
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=init_worker)
        return self._pool.imap(func, list(tasks), chunksize=1)

    def __getstate__(self) -> dict:
        return {"workers": self.workers, "_pool": None, "submitter": None}

    def close(self) -> None:
        """Let the workers finish and end them."""
        self._end(now=False)

    def terminate(self) -> None:
        """End the workers now."""
        self._end(now=True)

    def _end(self, now: bool) -> None:
        if self.submitter is not None:  # the steady-state loop's pool ends at once either way
            self.submitter.close()
            self.submitter = None
        if self._pool is not None:
            if now:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None
