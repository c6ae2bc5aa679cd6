"""One run per output folder: an advisory lock on the folder itself, held while the run lives.

``flock`` on the directory's own descriptor writes nothing into the folder, and the kernel releases it
when the process ends, however it ends, so there is never a stale lock to clean up. The holder's pid is
read from ``/proc/locks`` where the system has one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import LLMMergeError

__all__ = ["RunLock", "FolderBusyError"]


class FolderBusyError(LLMMergeError):
    """Another live run holds the output folder."""


def _holder(path: Path) -> int | None:
    """The pid holding a flock on ``path``, from /proc/locks (Linux), or None."""
    try:
        stat = os.stat(path)
        wanted = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
        with open("/proc/locks") as handle:
            for line in handle:
                fields = line.split()
                if "FLOCK" in fields and len(fields) >= 6 and fields[-3] == wanted:
                    return int(fields[-4])
    except (OSError, ValueError):
        pass
    return None


class RunLock:
    """``with RunLock(folder):`` creates ``folder`` if needed and holds its lock, or raises FolderBusyError.
    A folder it created and that is still empty at the release (the run stopped on bad input) is removed."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> RunLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise LLMMergeError(f"output path {self.folder} exists and is not a directory")
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(self.folder)
            who = f"process {holder}" if holder else "another process"
            raise FolderBusyError(f"{self.folder} is in use by another run ({who}); wait for it or choose "
                                  "another --output") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            if self._created and not any(self.folder.iterdir()):
                self.folder.rmdir()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
