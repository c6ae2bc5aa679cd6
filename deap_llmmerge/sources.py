"""Source models: loading, splitting into parts, and the per-process pool of their weights.

A *part* is the unit a genome decides about: ``embed`` (token and position embeddings), ``layers.<i>``
(one decoder layer each) and ``head`` (final norm and output projection). With tied embeddings the
output projection is the embedding matrix, so it travels with ``embed``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import mmap
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import IncompatibleModelsError, SourceModelError

__all__ = [
    "Source",
    "SourcePool",
    "as_source",
    "decoder_layers",
    "split_parts",
    "is_compatible",
    "first_mismatch",
    "load_model",
    "sha256_of",
]

log = logging.getLogger(__name__)

CompatibilityCheck = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], bool]

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


def load_model(source: Source, trust_remote_code: bool = False) -> nn.Module:
    """Load a causal LM from a local HF folder or a ``.gguf`` file (weights dequantised)."""
    from transformers import AutoModelForCausalLM

    path = source.path
    if path is None:
        raise SourceModelError(f"source {source.name!r} has no path to load from")
    if not path.exists():
        raise SourceModelError(f"source model not found: {path}")
    try:
        if path.suffix == ".gguf":
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, trust_remote_code=trust_remote_code
            )
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
        else:
            model = AutoModelForCausalLM.from_pretrained(
                str(path), trust_remote_code=trust_remote_code, use_safetensors=True
            )
    except Exception as exc:  # transformers raises many types; the user needs the one line
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceModelError(f"cannot load source model {path}: {first_line}") from exc
    return model.eval()


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Find the decoder layer list of any causal LM: ``(qualified name, ModuleList)``.

    The list is the ``nn.ModuleList`` whose length equals the config's layer count (``num_hidden_layers``,
    ``n_layer``), or the longest list of identical blocks when the config does not say.
    """
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    expected = getattr(text_config, "num_hidden_layers", None) or getattr(text_config, "n_layer", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
        and len({type(block) for block in module}) == 1
    ]
    if expected is not None:
        matching = [c for c in candidates if len(c[1]) == expected]
        if matching:
            return matching[0]
    if not candidates:
        raise SourceModelError(f"{type(model).__name__}: no decoder layer list (nn.ModuleList) found")
    return max(candidates, key=lambda c: len(c[1]))


def split_parts(model: nn.Module) -> dict[str, list[tuple[str, str]]]:
    """Group the model's parameters into parts, in network order.

    Returns ``{part: [(parameter name, name inside the part), ...]}``. Inside a layer part the names are
    relative to the layer (``self_attn.q_proj.weight``) so that a plan can build one layer from another.
    """
    prefix, layers = decoder_layers(model)
    embedding_owned = {
        id(module.weight) for module in model.modules()
        if isinstance(module, nn.Embedding)
    }
    parts: dict[str, list[tuple[str, str]]] = {"embed": []}
    parts.update({f"layers.{i}": [] for i in range(len(layers))})
    parts["head"] = []
    for name, param in model.named_parameters():
        if name.startswith(prefix + "."):
            index, _, rest = name[len(prefix) + 1:].partition(".")
            parts[f"layers.{index}"].append((name, rest))
        elif id(param) in embedding_owned:
            parts["embed"].append((name, name))
        else:
            parts["head"].append((name, name))
    return {part: names for part, names in parts.items() if names}


def first_mismatch(reference: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor]) -> str | None:
    """Describe the first parameter that differs in name or shape, or None when the two match."""
    for name, tensor in reference.items():
        if name not in candidate:
            return f"parameter {name!r} is missing"
        if tuple(candidate[name].shape) != tuple(tensor.shape):
            return f"parameter {name!r} has shape {tuple(tensor.shape)} vs {tuple(candidate[name].shape)}"
    for name in candidate:
        if name not in reference:
            return f"parameter {name!r} is extra"
    return None


def is_compatible(reference: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor]) -> bool:
    """Default compatibility rule for one part: identical parameter names and shapes."""
    return first_mismatch(reference, candidate) is None


def _mmap_safetensors(path: Path) -> dict[str, torch.Tensor]:
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


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    return sorted(folder.glob("*.safetensors"))


def sha256_of(path: Path) -> str:
    """Content hash of a source: the file itself, or a folder's config and weight files."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else [path / "config.json", *_weight_files(path)]
    for file in files:
        if not file.exists():
            continue
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class SourcePool:
    """The weights of every source, once per process, addressed by (source, part, name in part).

    Folders of safetensors are memory-mapped; model objects are used as they are, without a copy.
    The first source defines the part layout; ``compatible`` checks every other source against it.
    """

    def __init__(
        self,
        sources: Sequence[object],
        compatible: CompatibilityCheck = is_compatible,
        trust_remote_code: bool = False,
    ) -> None:
        if len(sources) < 2:
            raise SourceModelError(f"need at least 2 source models to merge, got {len(sources)}")
        self.sources = [as_source(item, i) for i, item in enumerate(sources)]
        self.trust_remote_code = trust_remote_code
        reference = self.sources[0].model or load_model(self.sources[0], trust_remote_code)
        self.reference_model = reference
        self._spare = reference if self.sources[0].model is None else None
        self.layer_prefix = decoder_layers(reference)[0]
        self.parts = split_parts(reference)
        self.part_names = list(self.parts)
        self._full_names = {part: {inner: full for full, inner in names} for part, names in self.parts.items()}
        self.tensors = [self._tensors_of(i, source) for i, source in enumerate(self.sources)]
        for index in range(1, len(self.sources)):
            self._check(index, compatible)

    @property
    def num_sources(self) -> int:
        return len(self.sources)

    def _tensors_of(self, index: int, source: Source) -> dict[str, torch.Tensor]:
        if source.model is not None:
            return {name: p.detach() for name, p in source.model.named_parameters()}
        wanted = [name for names in self.parts.values() for name, _ in names]
        if source.path is not None and source.path.is_dir():
            mapped: dict[str, torch.Tensor] = {}
            for file in _weight_files(source.path):
                mapped.update(_mmap_safetensors(file))
            if mapped and all(name in mapped for name in wanted):
                return mapped
            log.info("%s: parameter names differ from the model's; loading it through transformers", source.path)
        model = load_model(source, self.trust_remote_code)
        return {name: p.detach() for name, p in model.named_parameters()}

    def new_skeleton(self) -> nn.Module:
        """A model of the reference architecture whose weights are its own, for writing merges into.

        A reference loaded from a path is handed out the first time (the pool's tensors are mapped from
        the files, not taken from it); after that, and for model objects, it is deep-copied.
        """
        if self._spare is not None:
            model, self._spare = self._spare, None
            return model
        return copy.deepcopy(self.reference_model)

    def part_tensors(self, source: int, part: str) -> dict[str, torch.Tensor]:
        """``{name inside part: tensor}`` of one source's part (missing names are left out)."""
        tensors = self.tensors[source]
        return {inner: tensors[full] for full, inner in self.parts[part] if full in tensors}

    def tensor(self, source: int, part: str, inner: str) -> torch.Tensor:
        """One source tensor, by the part's layout of the reference model."""
        full = self._full_names[part][inner]
        return self.tensors[source][full]

    def _layer_count(self, source: int) -> int:
        prefix = self.layer_prefix + "."
        indices = {name[len(prefix):].split(".", 1)[0] for name in self.tensors[source] if name.startswith(prefix)}
        return len(indices)

    def _check(self, index: int, compatible: CompatibilityCheck) -> None:
        ours, theirs = self._layer_count(0), self._layer_count(index)
        if theirs != ours:
            raise IncompatibleModelsError(
                f"source {index} ({self.sources[index].name}) has {theirs} decoder layers under "
                f"{self.layer_prefix!r}, source 0 ({self.sources[0].name}) has {ours}"
            )
        for part in self.part_names:
            reference = self.part_tensors(0, part)
            candidate = self.part_tensors(index, part)
            if len(candidate) < len(reference) or not compatible(reference, candidate):
                why = first_mismatch(reference, candidate) or "rejected by is_compatible"
                raise IncompatibleModelsError(
                    f"source {index} ({self.sources[index].name}) is incompatible with source 0 "
                    f"({self.sources[0].name}) in part {part}: {why}"
                )
