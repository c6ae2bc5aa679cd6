"""lm-evaluation-harness tasks as benchmarks (the optional extra ``lm-eval``).

``benchmark: {arc: {lm_eval: arc_easy, split: test, limit: 500}}`` (or a task of the user's own YAML files,
``include_path: DIR``) builds the task as lm-eval's ``simple_evaluate`` does (its task manager, few-shot
count and seed, limit), takes the requests lm-eval would send a model, and turns them into this project's
kinds with lm-eval's own tokenization (the context's trailing spaces move to the continuation; the
continuation's tokens are what encoding the whole string adds after the context's; an empty context is
the tokenizer's BOS or EOS token):

- ``multiple_choice`` tasks: one item per document, its choices as continuations of the same context, the
  answer ``doc_to_target``. Accuracy with ``normalization: none`` is lm-eval's ``acc``; with ``chars`` (the
  default) its ``acc_norm`` (log-likelihood per character of the choice).
- ``loglikelihood`` tasks: one ``completion`` row per document (the target's tokens labeled).

Other output types (``generate_until``, ``loglikelihood_rolling``) are refused. The datasets come from the
user's local Hugging Face cache or a local ``dataset_path``; nothing here downloads.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..errors import BenchmarkDataError, first_line
from .benchmarks import BenchmarkData

__all__ = ["lm_eval_benchmark", "lm_eval_pair"]

FEWSHOT_SEED = 1234  # simple_evaluate's default fewshot_random_seed
SCORED = ("multiple_choice", "loglikelihood")


def lm_eval_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as lm-eval's HFLM encodes a causal model's request."""
    def encode(text: str) -> list[int]:
        bos = tokenizer.bos_token
        special = {"add_special_tokens": False} if bos and text.startswith(bos) else {}
        return tokenizer.encode(text, **special)

    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer.encode(continuation, add_special_tokens=False)
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, context_ids = encode(context + continuation), encode(context)
    return context_ids, whole[len(context_ids):]


@functools.lru_cache(maxsize=4)
def _manager(manager_class, include_path: str | None, include_defaults: bool):
    """lm-eval's task index, built once per process and folder."""
    return manager_class(include_path=include_path, include_defaults=include_defaults)


def _task(name: str, include_path: Path | None, split: str | None, num_fewshot: int | None):
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise BenchmarkDataError(f"lm-eval task {name!r}: needs lm-evaluation-harness: "
                                 "pip install 'deap-llmmerge[lm-eval]'") from exc
    if include_path is not None and not Path(include_path).is_dir():
        raise BenchmarkDataError(f"lm-eval task {name!r}: include_path {include_path} is not a folder")
    try:
        loaded = None
        if include_path is not None:  # the user's own folder first: indexing lm-eval's own tasks takes seconds
            try:
                loaded = _manager(TaskManager, str(include_path), False).load([name])["tasks"]
            except Exception:
                loaded = None
        if not loaded:
            loaded = _manager(TaskManager, None if include_path is None else str(include_path), True).load(
                [name])["tasks"]
    except Exception as exc:
        raise BenchmarkDataError(f"lm-eval task {name!r}: {first_line(exc)}") from exc
    if name not in loaded:
        raise BenchmarkDataError(f"lm-eval task {name!r} is a group of {len(loaded)} tasks; name one of them "
                                 f"({', '.join(sorted(loaded)[:5])}{', ...' if len(loaded) > 5 else ''})")
    task = loaded[name]
    kind = task.get_config("output_type")
    if kind not in SCORED:
        raise BenchmarkDataError(f"lm-eval task {name!r} has output type {kind!r}; only multiple_choice and "
                                 "loglikelihood tasks are scored by log-likelihood")
    if split is not None:
        if split not in task.dataset:
            raise BenchmarkDataError(f"lm-eval task {name!r} has no split {split!r} (it has "
                                     f"{', '.join(task.dataset)})")
        task.set_config(key="test_split", value=split)
    if num_fewshot is not None and task.get_config("num_fewshot") != 0:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return task, kind


def lm_eval_benchmark(name: str, tokenizer, *, include_path: str | Path | None = None, split: str | None = None,
                      limit: float | None = None, num_fewshot: int | None = None,
                      normalization: str = "chars") -> BenchmarkData:
    """The lm-eval task ``name`` as a benchmark (see the module docstring)."""
    from .benchmark_files import _pack, _pad_id

    task, kind = _task(name, None if include_path is None else Path(include_path), split, num_fewshot)
    from lm_eval.evaluator_utils import get_sample_size  # simple_evaluate's own reading of limit

    try:
        task.build_all_requests(limit=get_sample_size(task, limit), rank=0, world_size=1)
    except Exception as exc:
        raise BenchmarkDataError(f"lm-eval task {name!r}: {first_line(exc)}") from exc
    documents: dict[int, list] = {}
    for instance in task.instances:
        documents.setdefault(instance.doc_id, []).append(instance)
    if not documents:
        raise BenchmarkDataError(f"lm-eval task {name!r}: no documents")
    sequences, item, correct, lengths = [], [], [], []
    for number, doc_id in enumerate(sorted(documents)):
        requests = sorted(documents[doc_id], key=lambda instance: instance.idx)
        doc = requests[0].doc
        if kind == "multiple_choice":
            choices = task.doc_to_choice(doc)
            answer = task.doc_to_target(doc)
            answer = choices.index(answer) if isinstance(answer, str) and answer in choices else answer
            if not isinstance(answer, int) or not 0 <= answer < len(choices):
                raise BenchmarkDataError(f"lm-eval task {name!r} document {doc_id}: answer {answer!r} is not one "
                                         f"of its {len(choices)} choices (several answers are not supported)")
        for j, request in enumerate(requests):
            context, continuation = lm_eval_pair(tokenizer, *request.arguments)
            sequences.append((context + continuation, len(continuation)))
            if kind == "multiple_choice":
                item.append(number)
                correct.append(j == answer)
                lengths.append({"chars": float(len(choices[j])), "tokens": float(len(continuation)),
                                "none": 1.0}[normalization])
    tensors = _pack(sequences, _pad_id(tokenizer))
    if kind == "loglikelihood":
        return BenchmarkData(**tensors, kind="completion")
    return BenchmarkData(**tensors, kind="multiple_choice", item=torch.tensor(item), correct=torch.tensor(correct),
                         norm_length=torch.tensor(lengths, dtype=torch.float64))
