"""Benchmark tensors: the data every candidate merge is scored on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import BenchmarkDataError

__all__ = ["BenchmarkData", "IGNORE_INDEX", "load_benchmark"]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class BenchmarkData:
    """``input_ids`` and ``labels`` (LongTensor ``[N, T]``, labels aligned with inputs, -100 = ignored).

    As in Hugging Face causal LMs, the prediction at position t is scored against ``labels[t + 1]``, so
    every sequence needs at least one labeled position after the first token.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("input_ids", "labels", "attention_mask"):
            tensor = getattr(self, name)
            if tensor is None and name == "attention_mask":
                continue
            if not isinstance(tensor, torch.Tensor):
                raise BenchmarkDataError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
            if tensor.dim() != 2:
                raise BenchmarkDataError(f"{name} must have shape [N, T], got {tuple(tensor.shape)}")
            if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
                raise BenchmarkDataError(f"{name} must hold integers, got {tensor.dtype}")
            if tensor.shape != self.input_ids.shape:
                raise BenchmarkDataError(
                    f"{name} has shape {tuple(tensor.shape)}, input_ids has {tuple(self.input_ids.shape)}"
                )
        if self.input_ids.shape[0] == 0 or self.input_ids.shape[1] < 2:
            raise BenchmarkDataError(
                f"benchmark needs N >= 1 sequences of T >= 2 tokens, got {tuple(self.input_ids.shape)}"
            )
        if self.input_ids.min() < 0:
            raise BenchmarkDataError(f"input_ids must be >= 0, found {int(self.input_ids.min())}")
        labeled = (self.labels[:, 1:] != IGNORE_INDEX).sum(dim=1)
        empty = (labeled == 0).nonzero().flatten()
        if len(empty):
            raise BenchmarkDataError(
                f"{len(empty)} sequence(s) have no labeled position after the first token "
                f"(first: row {int(empty[0])}); labels of -100 are ignored"
            )

    @classmethod
    def coerce(cls, data: object) -> BenchmarkData:
        """Accept a BenchmarkData, a mapping of tensors, or an ``(input_ids, labels)`` tuple."""
        if isinstance(data, BenchmarkData):
            return data
        if isinstance(data, Mapping):
            unknown = set(data) - {"input_ids", "labels", "attention_mask"}
            if unknown:
                raise BenchmarkDataError(f"unknown benchmark keys: {sorted(unknown)}")
            if "input_ids" not in data or "labels" not in data:
                raise BenchmarkDataError("benchmark needs both 'input_ids' and 'labels'")
            return cls(data["input_ids"], data["labels"], data.get("attention_mask"))
        if isinstance(data, (tuple, list)) and len(data) in (2, 3):
            return cls(*data)
        raise BenchmarkDataError(
            f"benchmark_data must be BenchmarkData, a dict of tensors or (input_ids, labels), got {type(data).__name__}"
        )

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_labeled(self) -> int:
        """Number of scored positions (labels after the shift that are not -100)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def batches(self, batch_size: int, device: torch.device | str) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield ``(input_ids, labels, attention_mask or None)`` chunks moved to ``device``."""
        for start in range(0, len(self), batch_size):
            chunk = slice(start, start + batch_size)
            mask = None if self.attention_mask is None else self.attention_mask[chunk].to(device)
            yield self.input_ids[chunk].to(device), self.labels[chunk].to(device), mask


def load_benchmark(path: str | Path) -> BenchmarkData:
    """Load ``torch.save({"input_ids": ..., "labels": ...})`` safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkDataError(f"benchmark file not found: {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean the same to the user
        raise BenchmarkDataError(f"cannot read benchmark file {path}: {type(exc).__name__}") from exc
    try:
        return BenchmarkData.coerce(content)
    except BenchmarkDataError as exc:
        raise BenchmarkDataError(f"{path}: {exc}") from exc
