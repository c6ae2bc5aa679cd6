"""What a task carries instead of data: a benchmark by reference, sent to each worker process once.

A reference names the data's content hash; the data itself waits in a file of the user's private temporary
folder (workers on this host) and, in a SCOOP run, in a SCOOP shared constant (workers on other hosts). The
reader checks what it loads against the hash.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .private_temp import private_temp_dir

__all__ = ["DataRef", "share_data", "read_data", "scoop_running"]

_SHARED: set[str] = set()  # SCOOP constants this process has set


@dataclass(frozen=True)
class DataRef:
    """Where a worker finds data: a file and (in SCOOP runs) a shared constant, both keyed by content hash."""

    digest: str
    path: str = ""
    scoop_key: str | None = None


def scoop_running() -> bool:
    import scoop

    return bool(getattr(scoop, "IS_RUNNING", False))


def share_data(ref: DataRef, content: Callable[[], dict], use_scoop: bool = False) -> DataRef:
    """``ref`` with its data (``content()``, a dict of tensors) written where other processes read it."""
    if not ref.path:
        path = private_temp_dir() / f"data-{ref.digest}.pt"
        if not path.exists():  # a reader checks the content against the digest
            handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(handle, "wb") as file:
                torch.save(content(), file)
            os.replace(partial, path)
        ref = DataRef(ref.digest, str(path), ref.scoop_key)
    if use_scoop and ref.scoop_key is None and scoop_running():
        key = f"deap_llmmerge_data_{ref.digest}"
        if key not in _SHARED:  # a SCOOP constant is set once per run, whatever shares it
            from scoop import shared

            shared.setConst(**{key: content()})
            _SHARED.add(key)
        ref = DataRef(ref.digest, ref.path, key)
    return ref


def read_data(ref: DataRef) -> dict:
    """The data of ``ref``: from SCOOP's shared constant when there is one, else from its file (loaded
    weights-only). The caller checks the content hash."""
    if ref.scoop_key is not None and scoop_running():
        from scoop import shared

        content = shared.getConst(ref.scoop_key, timeout=300)
        if content is not None:
            return content
    return torch.load(ref.path, map_location="cpu", weights_only=True)
