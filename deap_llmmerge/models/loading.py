"""Reading source models from disk: HF folders (safetensors, or PyTorch ``.bin`` files; memory-mapped) and
``.gguf`` files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import SourceModelError, first_line

__all__ = ["Source", "as_source", "load_model", "no_progress_bars", "load_config", "meta_parameter_names",
           "mmap_safetensors", "map_weights", "weight_files", "sha256_of"]

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


@dataclass
class Source:
    """One source model: a loaded transformers model, or a local HF folder / ``.gguf`` file."""

    name: str
    path: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)


def as_source(item: object, index: int) -> Source:
    """Accept a model object, a path, or a ``{"path": ..., "name": ...}`` mapping."""
    if isinstance(item, Source):
        return item
    if isinstance(item, nn.Module):
        name = getattr(getattr(item, "config", None), "_name_or_path", "") or f"model_{index}"
        return Source(name=str(name), model=item)
    if isinstance(item, Mapping):
        path = Path(item["path"])
        return Source(name=str(item.get("name") or path.name), path=path)
    if isinstance(item, (str, os.PathLike)):
        return Source(name=Path(item).name, path=Path(item))
    raise SourceModelError(f"source {index}: expected a model, a path or {{path, name}}, got {type(item).__name__}")


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' "Loading weights" / "Writing model shards" bars off while inside (a library prints
    nothing; the CLI draws its own progress), as they were after."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_model(source: Source, trust_remote_code: bool = False) -> nn.Module:
    """Load a causal LM from a local HF folder or a ``.gguf`` file (weights dequantised)."""
    from transformers import AutoModelForCausalLM

    path = source.path
    if path is None:
        raise SourceModelError(f"source {source.name!r} has no path to load from")
    if not path.exists():
        raise SourceModelError(f"source model not found: {path}")
    if path.suffix != ".gguf":
        _check_model_folder(path)
    try:
        with no_progress_bars():
            if path.suffix == ".gguf":
                model = AutoModelForCausalLM.from_pretrained(
                    str(path.parent), gguf_file=path.name, trust_remote_code=trust_remote_code, local_files_only=True
                )
                model.hf_quantizer = None
                if hasattr(model.config, "quantization_config"):
                    del model.config.quantization_config
            else:
                model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code,
                                                             local_files_only=True)
    except Exception as exc:  # transformers raises many types; the user needs the one line
        raise _load_error(path, exc, trust_remote_code) from exc
    return model.eval()


def _load_error(path: Path, exc: Exception, trust_remote_code: bool) -> SourceModelError:
    if not trust_remote_code and "custom code" in str(exc):
        return SourceModelError(f"source model {path} needs its own code (auto_map in config.json): set "
                                "trust_remote_code: true in the config, or pass --trust-remote-code, if you trust it")
    return SourceModelError(f"cannot load source model {path}: {first_line(exc)}")


def _check_model_folder(path: Path) -> None:
    """What a source path that is neither a ``.gguf`` file nor an HF model folder is, in one line."""
    if path.is_file():
        raise SourceModelError(f"source model {path} is a file: name its folder (with config.json) or a .gguf file")
    if (path / "config.json").is_file():
        return
    if (path / "adapter_config.json").is_file():
        raise SourceModelError(
            f"source model {path} is a PEFT adapter (adapter_config.json, no config.json): merge it into its base "
            "model first (PeftModel.from_pretrained(base, path).merge_and_unload().save_pretrained(folder)) and "
            "name that folder")
    raise SourceModelError(f"source model {path} has no config.json: not a Hugging Face model folder")


def load_config(path: Path, trust_remote_code: bool = False):
    """The transformers config of an HF folder, without loading its weights."""
    from transformers import AutoConfig

    _check_model_folder(path)
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as exc:
        raise _load_error(path, exc, trust_remote_code) from exc


def meta_parameter_names(config, trust_remote_code: bool = False) -> set[str]:
    """The parameter names a model of ``config`` has (built on the meta device: no memory, no init)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {name for name, _ in model.named_parameters()}


def mmap_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Map a safetensors file copy-on-write: processes on one host share its pages."""
    with open(path, "rb") as handle:
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    header_size = int.from_bytes(buffer[:8], "little")
    if header_size <= 0 or 8 + header_size > len(buffer):
        raise SourceModelError(f"{path}: not a safetensors file (bad header length)")
    try:
        header = json.loads(buffer[8:8 + header_size])
    except ValueError as exc:
        raise SourceModelError(f"{path}: corrupt safetensors header") from exc
    start = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise SourceModelError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        if start + end > len(buffer):
            raise SourceModelError(f"{path}: truncated file (tensor {name!r} lies past its end)")
        count = (end - begin) // dtype.itemsize
        flat = torch.frombuffer(buffer, dtype=dtype, count=count, offset=start + begin) if count else \
            torch.empty(0, dtype=dtype)
        tensors[name] = flat.view(info["shape"])
    return tensors


def load_pytorch_weights(path: Path) -> dict[str, torch.Tensor]:
    """A PyTorch checkpoint's (``pytorch_model.bin``) tensors, read weights-only (no pickled code runs) and
    memory-mapped copy-on-write when it is in torch's zip format (every ``torch.save`` since torch 1.6)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy format cannot be mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SourceModelError(f"{path}: cannot read PyTorch weights: {first_line(exc)}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise SourceModelError(f"{path}: not a PyTorch state dict (a mapping of names to tensors)")
    return dict(state)


def map_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weight file (see :func:`weight_files`), memory-mapped."""
    return mmap_safetensors(path) if path.suffix == ".safetensors" else load_pytorch_weights(path)


def weight_files(folder: Path) -> list[Path]:
    """A folder's weight files: its safetensors (the shards its index names, or every ``*.safetensors``),
    else its PyTorch ``pytorch_model*.bin`` files (likewise), as transformers prefers them."""
    for index_name, pattern in (("model.safetensors.index.json", "*.safetensors"),
                                ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = folder / index_name
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
        files = sorted(folder.glob(pattern))
        if files:
            return files
    return []


def sha256_of(path: Path) -> str:
    """Content hash of a source: the file itself, or a folder's config and weight files."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else [path / "config.json", *weight_files(path)]
    for file in files:
        if not file.exists():
            continue
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
