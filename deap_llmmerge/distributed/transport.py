"""What a task carries instead of data: a benchmark by reference, sent to each worker process once.

A reference names the data's content hash; the data itself waits in a file of the user's private temporary
folder (workers on this host) and, in a SCOOP run, in a SCOOP shared constant, in a Ray run in Ray's object
store (workers on other hosts). The reader checks what it loads against the hash.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace

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
    ray_object: object = None  # a Ray ObjectRef, in a Ray run


def scoop_running() -> bool:
    import scoop

    return bool(getattr(scoop, "IS_RUNNING", False))


def share_data(ref: DataRef, content: Callable[[], dict], use_scoop: bool = False, use_ray: bool = False) -> DataRef:
    """``ref`` with its data (``content()``, a dict of tensors) written where other processes read it."""
    if not ref.path:
        path = private_temp_dir() / f"data-{ref.digest}.pt"
        if not path.exists():  # a reader checks the content against the digest
            handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(handle, "wb") as file:
                torch.save(content(), file)
            os.replace(partial, path)
        ref = replace(ref, path=str(path))
    if use_scoop and ref.scoop_key is None and scoop_running():
        key = f"deap_llmmerge_data_{ref.digest}"
        if key not in _SHARED:  # a SCOOP constant is set once per run, whatever shares it
            from scoop import shared

            shared.setConst(**{key: content()})
            _SHARED.add(key)
        ref = replace(ref, scoop_key=key)
    if use_ray and ref.ray_object is None:
        import ray

        ref = replace(ref, ray_object=ray.put(content()))
    return ref


def read_data(ref: DataRef) -> dict:
    """The data of ``ref``: from Ray's object store or SCOOP's shared constant when there is one, else from
    its file (loaded weights-only). The caller checks the content hash."""
    if ref.ray_object is not None:
        import ray

        if ray.is_initialized():
            return ray.get(ref.ray_object)
    if ref.scoop_key is not None and scoop_running():
        from scoop import shared

        content = shared.getConst(ref.scoop_key, timeout=300)
        if content is not None:
            return content
    return torch.load(ref.path, map_location="cpu", weights_only=True)
