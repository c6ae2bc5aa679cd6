"""Benchmarks from users' files: multiple-choice items, completions and plain text, tokenized once.

- ``completion``: JSONL rows ``{"prompt", "answer"}``; the answer's tokens are labeled.
- ``multiple_choice``: JSONL or Parquet rows ``{"context", "choices", "answer"}`` (``answer``: the index of
  the correct choice, its text, or its letter, ``"B"``; other key names through ``fields``); one row of
  tensors per choice, the choice's tokens labeled.
- ``text``: a plain text file, or JSONL rows ``{"text"}``; cut into windows of ``window`` tokens, every
  token labeled.

A continuation (answer, choice) follows its prompt or context after one space, unless the prompt already
ends in whitespace (lm-evaluation-harness's target delimiter). The context is encoded as the tokenizer
encodes text (its own template decides about BOS); the continuation's tokens are those that encoding
the whole string adds after the context's, as lm-evaluation-harness splits them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import BenchmarkDataError, first_line
from ..run.output import TOKENIZER_FILES
from .benchmarks import IGNORE_INDEX, KINDS, BenchmarkData

__all__ = ["build_benchmark", "load_tokenizer", "continuation_ids"]


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The tokenizer of a local HF folder or ``.gguf`` file."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.exists():  # a local path, as the models are (never a hub download)
        raise BenchmarkDataError(f"cannot load a tokenizer from {path}: no such file or folder")
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise BenchmarkDataError(
            f"cannot load a tokenizer from {path}: the folder has no tokenizer files "
            f"({', '.join(TOKENIZER_FILES)}); name a folder that has them (`tokenizer:` in a run config, "
            "--tokenizer for `data build`)")
    try:
        if path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as exc:
        raise BenchmarkDataError(f"cannot load a tokenizer from {path}: {first_line(exc)}") from exc


def continuation_ids(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) with the delimiter rule of the module docstring."""
    if context and not context[-1].isspace():
        continuation = " " + continuation
    context_ids = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    if whole[:len(context_ids)] == context_ids and len(whole) > len(context_ids):
        return context_ids, whole[len(context_ids):]
    return context_ids, tokenizer(continuation, add_special_tokens=False)["input_ids"]


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise BenchmarkDataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise BenchmarkDataError(f"{path}: not a Parquet file ({type(exc).__name__})") from exc
        yield from enumerate(table.to_pylist(), start=1)
        return
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise BenchmarkDataError(f"{path} row {number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise BenchmarkDataError(f"{path} row {number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchmarkDataError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                                 f"{exc.start})") from exc


def _field(path: Path, number: int, row: dict, key: str, kind: type) -> object:
    if key not in row:
        raise BenchmarkDataError(f"{path} row {number}: missing key {key!r}")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BenchmarkDataError(f"{path} row {number}: {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _pack(sequences: list[tuple[list[int], int]], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, labels on the last ``n`` tokens of each sequence, attention mask."""
    length = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), length), pad, dtype=torch.long)
    labels = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, (ids, labeled) in enumerate(sequences):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, len(ids) - labeled:len(ids)] = torch.tensor(ids[len(ids) - labeled:])
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _completion(path: Path, tokenizer, max_items: int | None) -> BenchmarkData:
    sequences = []
    for number, row in _rows(path):
        prompt = _field(path, number, row, "prompt", str)
        answer = _field(path, number, row, "answer", str)
        if not answer:
            raise BenchmarkDataError(f"{path} row {number}: empty answer")
        context, continuation = continuation_ids(tokenizer, prompt, answer)
        if not context:
            raise BenchmarkDataError(f"{path} row {number}: empty prompt (nothing predicts the answer)")
        sequences.append((context + continuation, len(continuation)))
        if max_items is not None and len(sequences) == max_items:
            break
    if not sequences:
        raise BenchmarkDataError(f"{path}: no rows")
    return BenchmarkData(**_pack(sequences, _pad_id(tokenizer)), kind="completion")


def _answer_index(path: Path, number: int, answer: object, choices: list) -> int:
    """The correct choice's index from an index, the choice's own text, or a letter (``"B"``: the second)."""
    if isinstance(answer, str):
        if answer in choices:
            return choices.index(answer)
        letter = answer.strip().upper()
        if len(letter) == 1 and "A" <= letter <= "Z":
            answer = ord(letter) - ord("A")
        elif letter.isdigit():
            answer = int(letter)
        else:
            raise BenchmarkDataError(f"{path} row {number}: answer {answer!r} is neither a choice, a letter nor an "
                                     "index")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise BenchmarkDataError(f"{path} row {number}: answer must be an index, a choice or a letter, got "
                                 f"{type(answer).__name__}")
    if not 0 <= answer < len(choices):
        raise BenchmarkDataError(f"{path} row {number}: answer {answer} is out of range for {len(choices)} choices")
    return answer


def _multiple_choice(path: Path, tokenizer, max_items: int | None, normalization: str,
                     fields: dict[str, str]) -> BenchmarkData:
    sequences, item, correct, lengths = [], [], [], []
    items = 0
    for number, row in _rows(path):
        context = _field(path, number, row, fields.get("context", "context"), str)
        choices = _field(path, number, row, fields.get("choices", "choices"), list)
        key = fields.get("answer", "answer")
        if key not in row:
            raise BenchmarkDataError(f"{path} row {number}: missing key {key!r}")
        if not choices:
            raise BenchmarkDataError(f"{path} row {number}: empty choices")
        answer = _answer_index(path, number, row[key], choices)
        for j, choice in enumerate(choices):
            if not isinstance(choice, str) or not choice:
                raise BenchmarkDataError(f"{path} row {number}: choice {j} must be a non-empty string")
            context_ids, continuation = continuation_ids(tokenizer, context, choice)
            if not context_ids:
                raise BenchmarkDataError(f"{path} row {number}: empty context (nothing predicts the choices)")
            sequences.append((context_ids + continuation, len(continuation)))
            item.append(items)
            correct.append(j == answer)
            lengths.append(float(len(choice) if normalization == "chars" else len(continuation)))
        items += 1
        if max_items is not None and items == max_items:
            break
    if not sequences:
        raise BenchmarkDataError(f"{path}: no rows")
    return BenchmarkData(**_pack(sequences, _pad_id(tokenizer)), kind="multiple_choice", item=torch.tensor(item),
                         correct=torch.tensor(correct), norm_length=torch.tensor(lengths, dtype=torch.float64))


def _text_windows(path: Path, tokenizer, window: int, max_items: int | None) -> BenchmarkData:
    if path.suffix == ".jsonl":
        text = "\n\n".join(str(_field(path, number, row, "text", str)) for number, row in _rows(path))
    else:
        text = _text(path)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise BenchmarkDataError(f"{path}: fewer than 2 tokens of text")
    starts = range(0, max(1, len(ids) - window + 1), window)
    windows = [ids[start:start + window] for start in starts][:max_items]
    input_ids = torch.tensor(windows, dtype=torch.long)
    return BenchmarkData(input_ids=input_ids, labels=input_ids.clone(), kind="text")


def build_benchmark(kind: str, path: str | Path, tokenizer, *, window: int = 128, normalization: str = "chars",
                    max_items: int | None = None, fields: dict[str, str] | None = None) -> BenchmarkData:
    """Tensors of ``kind`` from the file at ``path`` (see the module docstring); ``tokenizer`` is a
    tokenizer object or the path of a model whose tokenizer to use; ``fields`` names the rows' own keys for
    a multiple-choice file's ``context``, ``choices`` and ``answer`` (``{"choices": "endings"}``)."""
    path = Path(path)
    if kind not in KINDS:
        raise BenchmarkDataError(f"unknown benchmark kind {kind!r}; known: {', '.join(KINDS)}")
    if not path.is_file():
        raise BenchmarkDataError(f"benchmark file not found: {path}")
    if kind == "tensors":
        from .benchmarks import load_benchmark

        return load_benchmark(path)
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    if kind == "completion":
        return _completion(path, tokenizer, max_items)
    if kind == "multiple_choice":
        return _multiple_choice(path, tokenizer, max_items, normalization, fields or {})
    return _text_windows(path, tokenizer, window, max_items)
