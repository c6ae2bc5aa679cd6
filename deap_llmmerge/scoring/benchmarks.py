"""Benchmark tensors: the data every candidate merge is scored on, and the checks that keep them sound."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from ..errors import BenchmarkDataError

__all__ = ["BenchmarkData", "IGNORE_INDEX", "KINDS", "load_benchmark", "Batch"]

IGNORE_INDEX = -100
KINDS = ("tensors", "completion", "multiple_choice", "text")
_ROW_FIELDS = ("item", "correct", "norm_length")


@dataclass(frozen=True)
class Batch:
    """Some rows (whole items), moved to the device: inputs for the model and what the metrics need. ``rows``
    are the data's row indices (a CPU LongTensor), in the batch's order."""

    rows: torch.Tensor
    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    scored_rows: torch.Tensor | None = None  # packed batches: the row (of rows) each scored position belongs to


@dataclass(frozen=True)
class BenchmarkData:
    """``input_ids`` and ``labels`` (LongTensor ``[N, T]``, labels aligned with inputs, -100 = ignored).

    As in Hugging Face causal LMs, the prediction at position t is scored against ``labels[t + 1]``, so
    every sequence needs at least one labeled position after the first token. ``attention_mask`` (1 = token,
    0 = padding) may pad on either side; position ids are derived from it. ``kind`` names the metric pair
    (see :mod:`deap_llmmerge.metrics`); a ``multiple_choice`` set also has, per row, the ``item`` it belongs
    to, whether it is the ``correct`` choice and the ``norm_length`` (characters) of its continuation.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None = None
    kind: str = "tensors"
    item: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    norm_length: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BenchmarkDataError(f"unknown benchmark kind {self.kind!r}; known: {', '.join(KINDS)}")
        for name in ("input_ids", "labels", "attention_mask"):
            tensor = getattr(self, name)
            if tensor is None and name == "attention_mask":
                continue
            if not isinstance(tensor, torch.Tensor):
                raise BenchmarkDataError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
            if tensor.dim() != 2:
                raise BenchmarkDataError(f"{name} must have shape [N, T], got {tuple(tensor.shape)}")
            if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
                raise BenchmarkDataError(f"{name} must hold integers, got {tensor.dtype}")
            if tensor.shape != self.input_ids.shape:
                raise BenchmarkDataError(
                    f"{name} has shape {tuple(tensor.shape)}, input_ids has {tuple(self.input_ids.shape)}"
                )
            if tensor.dtype != torch.long:
                object.__setattr__(self, name, tensor.long())
        if self.input_ids.shape[0] == 0 or self.input_ids.shape[1] < 2:
            raise BenchmarkDataError(
                f"benchmark needs N >= 1 sequences of T >= 2 tokens, got {tuple(self.input_ids.shape)}"
            )
        if self.input_ids.min() < 0:
            raise BenchmarkDataError(f"input_ids must be >= 0, found {int(self.input_ids.min())}")
        bad_labels = (self.labels < 0) & (self.labels != IGNORE_INDEX)
        if bad_labels.any():
            raise BenchmarkDataError(f"labels must be token ids or -100, found {int(self.labels[bad_labels][0])}")
        if self.attention_mask is not None and not ((self.attention_mask == 0) | (self.attention_mask == 1)).all():
            raise BenchmarkDataError("attention_mask must hold only 0 and 1")
        scored = self.scored_positions
        empty = (scored.sum(dim=1) == 0).nonzero().flatten()
        if len(empty):
            raise BenchmarkDataError(
                f"{len(empty)} sequence(s) have no labeled position after the first token "
                f"(first: row {int(empty[0])}); labels of -100 are ignored"
            )
        if self.attention_mask is not None:
            orphan = scored & (self.attention_mask[:, :-1] == 0)
            if orphan.any():
                row, column = (int(i) for i in orphan.nonzero()[0])
                raise BenchmarkDataError(
                    f"row {row} labels position {column + 1}, which follows padding (nothing predicts it); "
                    "set that label to -100"
                )
        self._check_rows()

    def _check_rows(self) -> None:
        given = [name for name in _ROW_FIELDS if getattr(self, name) is not None]
        if self.kind != "multiple_choice":
            if given:
                raise BenchmarkDataError(f"{given[0]} is only for multiple_choice benchmarks, not {self.kind}")
            return
        if len(given) != len(_ROW_FIELDS):
            missing = [name for name in _ROW_FIELDS if name not in given]
            raise BenchmarkDataError(f"multiple_choice benchmark needs {', '.join(missing)}")
        for name in _ROW_FIELDS:
            tensor = getattr(self, name)
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (len(self),):
                raise BenchmarkDataError(f"{name} must be a tensor of shape [{len(self)}]")
        object.__setattr__(self, "item", self.item.long())
        object.__setattr__(self, "correct", self.correct.bool())
        object.__setattr__(self, "norm_length", self.norm_length.double())
        if (self.item[1:] < self.item[:-1]).any():
            raise BenchmarkDataError("multiple_choice rows must be grouped by item (item ids non-decreasing)")
        per_item = torch.zeros(int(self.item.max()) + 1, dtype=torch.long).index_add_(0, self.item, self.correct.long())
        present = torch.unique(self.item)
        if (per_item[present] != 1).any():
            bad = int(present[(per_item[present] != 1)][0])
            raise BenchmarkDataError(f"multiple_choice item {bad} needs exactly one correct choice")

    @classmethod
    def coerce(cls, data: object) -> BenchmarkData:
        """Accept a BenchmarkData, a mapping of tensors, or an ``(input_ids, labels)`` tuple."""
        if isinstance(data, BenchmarkData):
            return data
        if isinstance(data, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = set(data) - known
            if unknown:
                raise BenchmarkDataError(f"unknown benchmark keys: {sorted(unknown)}")
            if "input_ids" not in data or "labels" not in data:
                raise BenchmarkDataError("benchmark needs both 'input_ids' and 'labels'")
            return cls(**data)
        if isinstance(data, (tuple, list)) and len(data) in (2, 3):
            return cls(*data)
        raise BenchmarkDataError(
            f"benchmark_data must be BenchmarkData, a dict of tensors or (input_ids, labels), got {type(data).__name__}"
        )

    def to_dict(self) -> dict:
        """The form ``torch.save`` writes and :func:`load_benchmark` reads."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def scored_positions(self) -> torch.Tensor:
        """``[N, T-1]`` bool: positions whose next-token prediction is scored."""
        return self.labels[:, 1:] != IGNORE_INDEX

    @property
    def num_labeled(self) -> int:
        """Number of scored positions (labels after the shift that are not -100)."""
        return int(self.scored_positions.sum())

    def content_hash(self) -> str:
        digest = hashlib.sha256(self.kind.encode())
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                digest.update(f.name.encode())
                digest.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
                digest.update(value.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def to(self, device: torch.device | str) -> BenchmarkData:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("input_ids", "labels", "attention_mask"):
            if moved[name] is not None:
                moved[name] = moved[name].to(device)
        return replace(self, **moved)

    def subset(self, rows: torch.Tensor) -> BenchmarkData:
        """The rows ``rows`` (sorted indices); multiple-choice subsets should keep whole items."""
        picked = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in picked.items():
            if isinstance(value, torch.Tensor):
                picked[name] = value[rows.to(value.device)]
        return BenchmarkData(**picked)

    def check_against(self, vocab_size: int, max_positions: int | None, name: str = "benchmark") -> None:
        """Refuse token ids outside the vocabulary and sequences longer than the model's context."""
        largest = int(self.input_ids.max())
        if largest >= vocab_size:
            raise BenchmarkDataError(f"{name} token id {largest} is outside the models' vocabulary of {vocab_size}")
        labels = self.labels[self.labels != IGNORE_INDEX]
        if len(labels) and int(labels.max()) >= vocab_size:
            raise BenchmarkDataError(
                f"{name} label {int(labels.max())} is outside the models' vocabulary of {vocab_size}"
            )
        if max_positions is not None:
            lengths = self.input_ids.shape[1] if self.attention_mask is None else int(self.attention_mask.sum(1).max())
            if lengths > max_positions:
                raise BenchmarkDataError(
                    f"{name} has sequences of {lengths} tokens, longer than the models' context of {max_positions}"
                )

    def batch_rows(self, batch_size: int, by_length: bool = True) -> list[torch.Tensor]:
        """The rows of each batch: whole items (a multiple-choice item's choices stay together), at most
        ``batch_size`` rows unless one item has more. Padded data goes ``by_length``, in order of each item's
        longest row, so that a batch holds rows of about one length (little padding); otherwise, and for
        unpadded data, in the data's order."""
        if self.item is None:
            spans = [(r, r + 1) for r in range(len(self))]
        else:
            bounds = [0, *(torch.nonzero(self.item[1:] != self.item[:-1]).flatten() + 1).tolist(), len(self)]
            spans = list(zip(bounds[:-1], bounds[1:]))
        if self.attention_mask is not None and by_length:
            lengths = self.attention_mask.sum(dim=1).tolist()
            spans.sort(key=lambda span: max(lengths[span[0]:span[1]]))
        batches, current = [], []
        for start, stop in spans:
            if current and len(current) + stop - start > batch_size:
                batches.append(torch.tensor(current, dtype=torch.long))
                current = []
            current += range(start, stop)
        if current:
            batches.append(torch.tensor(current, dtype=torch.long))
        return batches

    def batches(self, batch_size: int, device: torch.device | str, by_length: bool = True) -> Iterator[Batch]:
        """Batches (:meth:`batch_rows`) moved to ``device``, with padding columns that no row uses cut off."""
        for rows in self.batch_rows(batch_size, by_length):
            ids, labels = self.input_ids[rows], self.labels[rows]
            mask = None if self.attention_mask is None else self.attention_mask[rows]
            position_ids = None
            if mask is not None:
                used = mask.any(dim=0).nonzero().flatten()
                columns = slice(int(used[0]), int(used[-1]) + 1)
                ids, labels, mask = ids[:, columns], labels[:, columns], mask[:, columns]
                position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
                if bool(mask.all()):
                    mask, position_ids = None, None
            yield Batch(rows, ids.to(device), labels.to(device),
                        None if mask is None else mask.to(device),
                        None if position_ids is None else position_ids.to(device))


def load_benchmark(path: str | Path, kind: str | None = None) -> BenchmarkData:
    """Load ``torch.save({"input_ids": ..., "labels": ...})`` safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkDataError(f"benchmark file not found: {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean the same to the user
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BenchmarkDataError(f"cannot read benchmark file {path}: {type(exc).__name__}"
                                 + (f": {cause}" if cause else "")) from exc
    try:
        data = BenchmarkData.coerce(content)
    except BenchmarkDataError as exc:
        raise BenchmarkDataError(f"{path}: {exc}") from exc
    if kind is not None and kind != data.kind:
        raise BenchmarkDataError(f"{path}: holds a {data.kind} benchmark, the config says kind {kind}")
    return data
