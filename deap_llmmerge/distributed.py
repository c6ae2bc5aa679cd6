"""Where candidates are scored: in this process, in SCOOP workers, or in a multiprocessing pool.

Each backend is a ``map(func, tasks)``; the evaluator it carries builds its state (source pool,
skeleton model, data on its device) once per worker process, so only genomes and fitness values travel.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from .errors import ConfigError, EvaluationError
from .heartbeats import patient_scoop_resend
from .private_temp import private_temp_dir

__all__ = ["BACKENDS", "make_map", "scoop_map", "patient_scoop_resend", "scoop_entry_path", "launch_scoop",
           "init_worker", "PoolMap", "LaunchInterrupted", "STATUS_ENV", "ROOT_PID_ENV", "LOCK_ENV", "PROGRESS_ENV"]

STATUS_ENV = "DEAP_LLMMERGE_STATUS"  # where a launched run writes how it ended
ROOT_PID_ENV = "DEAP_LLMMERGE_ROOT_PID"  # where a launched run writes the pid of its root process
LOCK_ENV = "DEAP_LLMMERGE_LOCKED"  # the output folder whose lock the launcher holds for the run
PROGRESS_ENV = "DEAP_LLMMERGE_PROGRESS"  # "1": draw the progress bar although stderr is a pipe
THREADS_ENV = "DEAP_LLMMERGE_THREADS"


def init_worker() -> None:
    """One torch thread per worker unless ``DEAP_LLMMERGE_THREADS`` says otherwise; no progress bars; Ctrl-C
    is the main process's to handle (it ends the workers)."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    hf_logging.disable_progress_bar()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def scoop_map(func: Callable, tasks: Iterable) -> Iterator:
    """SCOOP's ``futures.map``: results in order, as they come (outside ``python -m scoop`` it runs
    serially with a warning)."""
    from scoop import futures

    patient_scoop_resend()
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
        """Let the workers finish and end them."""
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def terminate(self) -> None:
        """End the workers now."""
        if self._pool is not None:
            self._pool.terminate()
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


class LaunchInterrupted(Exception):
    """The launched SCOOP run was stopped by SIGINT or SIGTERM (``signum``); ``args[0]`` is its own line, or
    ``"interrupted"`` when it stopped before it could write one."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def _stream(source, sinks: list) -> None:
    """Copy a pipe to ``sinks`` as it comes (progress bars included), until it closes."""
    for chunk in iter(lambda: os.read(source.fileno(), 4096), b""):
        for sink in sinks:
            sink.write(chunk)
            sink.flush()


def _stop(process: subprocess.Popen, root_pid_file: Path, signum: int) -> None:
    """Ask the run's root process to stop (it checkpoints and ends its workers); SIGKILL what is left of the
    process group after a grace period."""
    try:
        os.kill(int(root_pid_file.read_text()), signum)
    except (OSError, ValueError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass


def launch_scoop(argv: list[str], workers: int, hostfile: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> str:
    """Run ``deap-llmmerge <argv>`` under ``python -m scoop -n workers``; return its stdout.

    The run's log lines (and progress bar, on a terminal) stream to stderr as they come; SCOOP's log is
    kept in a file only when the run fails. SCOOP's launcher exits 0 even when the script fails, so the run
    writes its status to the file named by ``DEAP_LLMMERGE_STATUS`` and this reads it: the run's own
    one-line error becomes an EvaluationError, its interruption a LaunchInterrupted. SIGINT and SIGTERM
    here are passed to the run, which stops at its last checkpoint; no SCOOP process outlives this call.
    """
    with tempfile.TemporaryDirectory(prefix="deap-llmmerge-") as folder:
        status_file, root_pid = Path(folder) / "status.json", Path(folder) / "root.pid"
        handle, name = tempfile.mkstemp(dir=private_temp_dir(), prefix="scoop-", suffix=".log")
        log_path = Path(name)
        command = [sys.executable, "-m", "scoop", "--quiet", "-n", str(workers)]
        if hostfile is not None:
            command += ["--hostfile", str(hostfile)]
        command += [str(scoop_entry_path()), *argv]
        env = {**os.environ, STATUS_ENV: str(status_file), ROOT_PID_ENV: str(root_pid), **(extra_env or {})}
        if sys.stderr.isatty():
            env[PROGRESS_ENV] = "1"
        interrupted = None
        with os.fdopen(handle, "wb") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                       start_new_session=True)
            out = io.BytesIO()
            threads = [threading.Thread(target=_stream, args=(process.stdout, [out]), daemon=True),
                       threading.Thread(target=_stream, args=(process.stderr, [log, sys.stderr.buffer]),
                                        daemon=True)]
            for thread in threads:
                thread.start()
            while process.poll() is None:
                try:
                    process.wait()
                except BaseException as exc:  # SIGINT / SIGTERM reach us as exceptions
                    interrupted = getattr(exc, "signum", signal.SIGINT)
                    _stop(process, root_pid, interrupted)
                    break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            for thread in threads:
                thread.join(timeout=5)
        status = json.loads(status_file.read_text()) if status_file.exists() else None
    if status is not None and status.get("signal"):
        log_path.unlink(missing_ok=True)
        raise LaunchInterrupted(status["error"], status["signal"])
    if interrupted is not None:  # the run ended without saying how: its output folder tells
        log_path.unlink(missing_ok=True)
        raise LaunchInterrupted("interrupted", interrupted)
    if status is None:
        raise EvaluationError(f"the SCOOP run ended without a status (exit {process.returncode}); log: {log_path}")
    if not status["ok"]:
        raise EvaluationError(f"{status['error']} (SCOOP log: {log_path})")
    log_path.unlink(missing_ok=True)
    return out.getvalue().decode()
