"""The one folder where a run keeps its temporary files: private to the user, checked before every use.

Files at predictable names in a shared temporary folder can be planted by another user (a link that makes
the run overwrite one of the user's files, data that the workers would score). So every temporary file of
deap-llmmerge lies in ``$TMPDIR/deap-llmmerge-<uid>``, made with mode 0700 and refused when it is a link,
someone else's, or open to others.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ..errors import LLMMergeError

__all__ = ["private_temp_dir"]


def private_temp_dir() -> Path:
    """``$TMPDIR/deap-llmmerge-<uid>``, created if needed; LLMMergeError when it is not this user's alone."""
    path = Path(tempfile.gettempdir()) / f"deap-llmmerge-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise LLMMergeError(f"{path} is not a folder of this user's alone (a link, another user's, or open to "
                            "others); remove it, or set TMPDIR to another folder")
    return path
