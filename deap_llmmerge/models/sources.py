"""The per-process pool of every source model's weights, addressed by (source, part, name in part). Folders of
safetensors (or of PyTorch ``.bin`` files) are memory-mapped; model objects are used as they are, without a
copy; PEFT adapter folders are merged into their base model on load (:mod:`.adapters`). The first source
defines the part layout; every other source (and the base model of task-vector methods, when it is not one of
the sources) is checked against it so that the pure genome of each source is that source.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from torch import nn

from ..devices import available_memory
from ..errors import IncompatibleModelsError, SourceModelError
from ..methods.inputs import DerivedCache
from .adapters import with_adapter_merged
from .compatibility import CompatibilityCheck, config_difference, first_mismatch, is_compatible, names_difference
from .loading import Source, as_source, load_config, load_model, map_weights, meta_parameter_names, weight_files
from .parts import LayerLayout, decoder_layers, split_parts

__all__ = ["SourcePool"]

log = logging.getLogger(__name__)


def _same_source(a: Source, b: Source) -> bool:
    if a.model is not None or b.model is not None:
        return a.model is b.model
    return a.path is not None and b.path is not None and a.path.resolve() == b.path.resolve()


class SourcePool:
    """The weights of every source (and of the base model), once per process.

    ``tensors[k]`` maps parameter names to tensors for source ``k``; ``base_index`` is the base model's
    index into ``tensors``: one of the sources (the first by default), or ``num_sources`` when the base
    was given separately. ``derived`` caches what merges compute from the sources alone (task vectors,
    magnitude buckets), within a quarter of the free memory.
    """

    def __init__(
        self,
        sources: Sequence[object],
        compatible: CompatibilityCheck = is_compatible,
        trust_remote_code: bool = False,
        base: object | None = None,
    ) -> None:
        if len(sources) < 2:
            raise SourceModelError(f"need at least 2 source models to merge, got {len(sources)}")
        base_path = None if base is None else as_source(base, len(sources)).path
        self.sources = [with_adapter_merged(as_source(item, i), base_path, trust_remote_code)
                        for i, item in enumerate(sources)]
        self.trust_remote_code = trust_remote_code
        entries = list(self.sources)
        self.base_index = 0
        self.base: Source | None = None
        if base is not None:
            self.base = as_source(base, len(self.sources))
            found = [k for k, source in enumerate(self.sources) if _same_source(source, self.base)]
            if found:
                self.base_index = found[0]
            else:
                self.base_index = len(entries)
                entries.append(self.base)
        self.entries = entries
        reference = self.sources[0].model or load_model(self.sources[0], trust_remote_code)
        self.reference_model = reference
        self._spare = reference if self.sources[0].model is None else None
        self.layer_prefix = decoder_layers(reference)[0]
        self.layout = LayerLayout.of(reference)  # before any skeleton changes the reference's layers
        self.parts = split_parts(reference)
        self.part_names = list(self.parts)
        self._full_names = {part: {inner: full for full, inner in names} for part, names in self.parts.items()}
        self._loaded: dict[int, nn.Module] = {}
        self.configs = [self._config_of(i, entry) for i, entry in enumerate(entries)]
        self.tensors = [self._tensors_of(i, entry) for i, entry in enumerate(entries)]
        self.derived = DerivedCache(available_memory(torch.device("cpu")) // 4)
        for index in range(1, len(entries)):
            self._check(index, compatible)
        self._loaded.clear()

    @property
    def num_sources(self) -> int:
        """Sources a genome chooses among (the separate base model is not one of them)."""
        return len(self.sources)

    @property
    def num_layers(self) -> int:
        return sum(1 for part in self.part_names if part.startswith("layers."))

    @property
    def vocab_size(self) -> int:
        return int(self.reference_model.get_input_embeddings().weight.shape[0])

    @property
    def max_positions(self) -> int | None:
        """The context length the models declare (``max_position_embeddings`` / ``n_positions``), if any."""
        config = self.reference_model.config
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def name(self, index: int) -> str:
        entry = self.entries[index]
        label = "base model" if index >= self.num_sources else f"source {index}"
        return f"{label} ({entry.name})"

    def _model_of(self, index: int, entry: Source) -> nn.Module:
        if entry.model is not None:
            return entry.model
        if index == 0:
            return self.reference_model
        if index not in self._loaded:
            self._loaded[index] = load_model(entry, self.trust_remote_code)
        return self._loaded[index]

    def _config_of(self, index: int, entry: Source):
        if entry.model is None and entry.path is not None and entry.path.is_dir() and index != 0:
            return load_config(entry.path, self.trust_remote_code)
        return self._model_of(index, entry).config

    def _tensors_of(self, index: int, entry: Source) -> dict[str, torch.Tensor]:
        if entry.model is not None:
            return {name: p.detach() for name, p in entry.model.named_parameters()}
        wanted = [name for names in self.parts.values() for name, _ in names]
        if entry.path is not None and entry.path.is_dir():
            mapped: dict[str, torch.Tensor] = {}
            for file in weight_files(entry.path):
                mapped.update(map_weights(file))
            if mapped and all(name in mapped for name in wanted):
                return mapped
            log.info("%s: parameter names differ from the model's; loading it through transformers", entry.path)
        if index == 0:  # the reference's own weights are source 0's: never write merges into it
            self._spare = None
        return {name: p.detach() for name, p in self._model_of(index, entry).named_parameters()}

    def _parameter_names(self, index: int) -> set[str]:
        entry = self.entries[index]
        if entry.model is not None or index == 0 or index in self._loaded:
            return {name for name, _ in self._model_of(index, entry).named_parameters()}
        return meta_parameter_names(self.configs[index], self.trust_remote_code)

    def move_to(self, device: torch.device, share: float = 0.5) -> bool:
        """Keep every source's tensors on ``device`` (in their own dtype) when they fit in ``share`` of its
        free memory, so merges run there; otherwise leave them memory-mapped and stream parts. Returns
        whether they moved."""
        size = sum(t.numel() * t.element_size() for tensors in self.tensors for t in tensors.values())
        if size > share * available_memory(device):
            log.info("sources (%.1f GB) do not fit on %s; parts are streamed from memory", size / 1e9, device)
            return False
        self.tensors = [{name: t.to(device) for name, t in tensors.items()} for tensors in self.tensors]
        self.derived = DerivedCache(available_memory(device) // 4)
        return True

    def new_skeleton(self) -> nn.Module:
        """A model of the reference architecture whose weights are its own, for writing merges into; every
        layer computes as the same source layer (whatever an earlier skeleton's stacked plans changed).

        A reference loaded from a path is handed out the first time when the pool's tensors are mapped from
        the files, not taken from it; after that, and for model objects, it is deep-copied.
        """
        if self._spare is not None:
            model, self._spare = self._spare, None
            return model
        model = copy.deepcopy(self.reference_model)
        for layer in range(self.num_layers):
            self.layout.follow(model, layer, layer)
        self.layout.adopt_outside(model)
        return model

    def part_tensors(self, source: int, part: str) -> dict[str, torch.Tensor]:
        """``{name inside part: tensor}`` of one source's part (missing names are left out)."""
        tensors = self.tensors[source]
        return {inner: tensors[full] for full, inner in self.parts[part] if full in tensors}

    def tensor(self, source: int, part: str, inner: str) -> torch.Tensor:
        """One source tensor, by the part's layout of the reference model."""
        return self.tensors[source][self._full_names[part][inner]]

    def _layer_count(self, source: int) -> int:
        prefix = self.layer_prefix + "."
        indices = {name[len(prefix):].split(".", 1)[0] for name in self.tensors[source] if name.startswith(prefix)}
        return len(indices)

    def _refuse(self, index: int, why: str) -> None:
        raise IncompatibleModelsError(f"{self.name(index)} is incompatible with {self.name(0)}: {why}")

    def _check(self, index: int, compatible: CompatibilityCheck) -> None:
        """Layer count, the config fields that change the computation, parameter names both ways, part
        shapes (and the user's rule)."""
        kinds = [getattr(self.configs[i], "model_type", None) for i in (index, 0)]
        if None not in kinds and kinds[0] != kinds[1]:
            where = [f" at {e.path}" if e.path is not None else "" for e in (self.entries[index], self.entries[0])]
            raise IncompatibleModelsError(f"{self.name(index)}{where[0]} is a {kinds[0]} model, {self.name(0)}"
                                          f"{where[1]} a {kinds[1]} ({kinds[0]} vs {kinds[1]}): merged sources "
                                          "share one architecture")
        ours, theirs = self._layer_count(0), self._layer_count(index)
        if theirs != ours:
            raise IncompatibleModelsError(
                f"{self.name(index)} has {theirs} decoder layers under {self.layer_prefix!r}, "
                f"{self.name(0)} has {ours}"
            )
        difference = config_difference(self.configs[0].to_dict(), self.configs[index].to_dict())
        if difference:
            self._refuse(index, difference)
        names = names_difference(self._parameter_names(0), self._parameter_names(index))
        if names:
            self._refuse(index, names)
        for part in self.part_names:
            reference = self.part_tensors(0, part)
            candidate = self.part_tensors(index, part)
            if len(candidate) < len(reference) or not compatible(reference, candidate):
                why = first_mismatch(reference, candidate) or "rejected by is_compatible"
                self._refuse(index, f"in part {part}: {why}")
        self._note_dtype(index)

    def _note_dtype(self, index: int) -> None:
        for name, tensor in self.tensors[0].items():
            other = self.tensors[index].get(name)
            if other is not None and other.dtype != tensor.dtype and tensor.is_floating_point():
                log.warning("%s holds %s weights (first: %s), %s holds %s: merges are written in %s",
                            self.name(index), other.dtype, name, self.name(0), tensor.dtype, tensor.dtype)
                return
