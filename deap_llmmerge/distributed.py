"""Where candidates are scored: in this process, in SCOOP workers, or in a multiprocessing pool.

Each backend is a ``map(func, tasks)``; the evaluator it carries builds its state (source pool,
skeleton model, data on its device) once per worker process, so only genomes and fitness values travel.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from .errors import ConfigError, EvaluationError

__all__ = ["BACKENDS", "make_map", "scoop_map", "scoop_entry_path", "launch_scoop", "init_worker",
           "STATUS_ENV"]

STATUS_ENV = "DEAP_LLMMERGE_STATUS"
THREADS_ENV = "DEAP_LLMMERGE_THREADS"


def init_worker() -> None:
    """One torch thread per worker unless ``DEAP_LLMMERGE_THREADS`` says otherwise; no progress bars."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    hf_logging.disable_progress_bar()


def scoop_map(func: Callable, tasks: Iterable) -> Iterator:
    """SCOOP's ``futures.map``: results in order, as they come (outside ``python -m scoop`` it runs
    serially with a warning)."""
    from scoop import futures

    return futures.map(func, tasks)


scoop_map.scoop = True


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
        return {"workers": self.workers, "_pool": None}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None


BACKENDS = ("serial", "scoop", "pool")


def make_map(backend: str, workers: int = 1) -> Callable:
    if backend == "serial":
        return map
    if backend == "scoop":
        return scoop_map
    if backend == "pool":
        return PoolMap(workers)
    raise ConfigError(f"unknown map backend {backend!r}; known: {', '.join(BACKENDS)}")


def scoop_entry_path() -> Path:
    """The script to hand to ``python -m scoop`` (SCOOP runs a file path, not ``-m module``)."""
    return Path(__file__).with_name("scoop_entry.py")


def launch_scoop(argv: list[str], workers: int, hostfile: Path | None = None) -> str:
    """Run ``deap-llmmerge <argv>`` under ``python -m scoop -n workers``; return its stdout.

    SCOOP's launcher exits 0 even when the script fails, so the run writes its status to a file named
    by ``DEAP_LLMMERGE_STATUS`` and this reads it. Raises EvaluationError with the run's own one-line error.
    """
    with tempfile.TemporaryDirectory(prefix="deap-llmmerge-") as folder:
        status_file = Path(folder) / "status.json"
        log_file = Path(tempfile.gettempdir()) / f"deap-llmmerge-scoop-{os.getpid()}.log"
        command = [sys.executable, "-m", "scoop", "-n", str(workers)]
        if hostfile is not None:
            command += ["--hostfile", str(hostfile)]
        command += [str(scoop_entry_path()), *argv]
        env = {**os.environ, STATUS_ENV: str(status_file)}
        with open(log_file, "w") as log:
            completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        status = json.loads(status_file.read_text()) if status_file.exists() else None
    if status is None:
        raise EvaluationError(f"the SCOOP run ended without a status (exit {completed.returncode}); log: {log_file}")
    if not status["ok"]:
        raise EvaluationError(f"{status['error']} (SCOOP log: {log_file})")
    log_file.unlink(missing_ok=True)
    return completed.stdout
