"""SCOOP: its map, and a run launched under ``python -m scoop`` whose status the launcher reads.

SCOOP's own launcher always exits 0, so a launched run writes how it ended to the file named by
``DEAP_LLMMERGE_STATUS`` and :func:`launch_scoop` reads it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import EvaluationError
from .heartbeats import patient_scoop_resend
from .private_temp import private_temp_dir

__all__ = ["scoop_map", "uses_scoop", "scoop_workers", "scoop_entry_path", "launch_scoop", "LaunchInterrupted",
           "STATUS_ENV", "ROOT_PID_ENV", "LOCK_ENV", "PROGRESS_ENV"]

STATUS_ENV = "DEAP_LLMMERGE_STATUS"  # where a launched run writes how it ended
ROOT_PID_ENV = "DEAP_LLMMERGE_ROOT_PID"  # where a launched run writes the pid of its root process
LOCK_ENV = "DEAP_LLMMERGE_LOCKED"  # the output folder whose lock the launcher holds for the run
PROGRESS_ENV = "DEAP_LLMMERGE_PROGRESS"  # "1": draw the progress bar although stderr is a pipe
_log = logging.getLogger(__name__)


def scoop_map(func: Callable, tasks: Iterable) -> Iterator:
    """SCOOP's ``futures.map``: results in order, as they come (outside ``python -m scoop`` it runs
    serially with a warning)."""
    from scoop import futures

    patient_scoop_resend()
    return futures.map(func, tasks)


scoop_map.scoop = True


def uses_scoop(base_map: Callable) -> bool:
    """Whether ``base_map`` is SCOOP's ``futures.map`` or deap-llmmerge's wrapper of it."""
    return getattr(base_map, "__module__", "") == "scoop.futures" or bool(getattr(base_map, "scoop", False))


def scoop_workers() -> int:
    """How many SCOOP workers the run has (1 outside SCOOP)."""
    import scoop

    return getattr(scoop, "SIZE", None) or 1


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
                 extra_env: dict[str, str] | None = None, scoop_args: list[str] | None = None) -> str:
    """Run ``deap-llmmerge <argv>`` under ``python -m scoop -n workers`` (and ``scoop_args``, SCOOP's own
    options such as ``--tunnel``); return its stdout.

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
        command += list(scoop_args or [])
        command += [str(scoop_entry_path()), *argv]
        _log.info("starting %d SCOOP workers %s; the run's log follows once they are up", workers,
                 f"on the hosts of {hostfile}" if hostfile is not None else "on this host")
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
