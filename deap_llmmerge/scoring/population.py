"""Scoring a population for less than its members' forward passes.

Three savings, each checked once per process against the plain path (and switched off, with a warning,
for an architecture where they would change a single metric):

- **Shared prefixes.** The hidden states after the embeddings and decoder layers 0..k depend only on the
  plan's steps for those parts. Candidates are scored in the order of their plans, so neighbours share the
  longest prefixes; the output of a shared layer is kept (within a memory budget) and replayed: the layers
  before it are replaced, for that forward pass, by a module returning the kept output.
- **Logits only where they count.** The output head runs only at positions whose next token is scored.
- **Contexts scored once.** A multiple-choice item's choices are packed into one row that holds the context
  once (:mod:`.packing`).

Batches hold rows of about one length (items in order of their longest row), so that little is padding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..devices import available_memory, out_of_memory, release_cached_memory
from ..models.engine import MergeEngine
from ..models.parts import decoder_layers, is_layer_part
from ..models.plans import MergePlan
from .benchmarks import IGNORE_INDEX, Batch, BenchmarkData
from .items import item_table, weighted_metrics
from .metrics import Metric, RowStatistics, benchmark_metrics, model_inputs, row_statistics
from .packing import pack_choices

__all__ = ["PopulationScorer", "shared_layers", "default_memory_budget"]

log = logging.getLogger(__name__)


def default_memory_budget(device: torch.device) -> int:
    """A quarter of the free memory of ``device``, in bytes."""
    return available_memory(device) // 4


def shared_layers(a: MergePlan, b: MergePlan) -> int:
    """How many decoder layers (from the first) two plans build identically, embeddings included: the
    number of layer outputs that ``b`` can take over from ``a``."""
    steps_a, steps_b = a.parts, b.parts
    if steps_a[0] != steps_b[0]:
        return 0
    shared = 0
    for (part_a, step_a), (part_b, step_b) in zip(steps_a[1:], steps_b[1:]):
        if not (is_layer_part(part_a) and is_layer_part(part_b)) or step_a != step_b:
            break
        shared += 1
    return shared


class _Replay(nn.Module):
    """Stands in for a decoder layer whose output is already known; other attributes are the layer's."""

    def __init__(self, layer: nn.Module, output: object) -> None:
        super().__init__()
        self.original = layer
        self.output = output

    def forward(self, *args: object, **kwargs: object) -> object:
        return self.output

    def __getattr__(self, name: str) -> object:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["original"], name)


def _size(output: object) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel() * output.element_size()
    if isinstance(output, (tuple, list)):
        return sum(_size(item) for item in output)
    return 0


@dataclass
class _Kept:
    layers: int  # the output of layer ``layers - 1`` is kept
    outputs: list  # one per batch
    size: int


class PopulationScorer:
    """Scores merge plans on named benchmarks with one engine; see the module docstring for the savings.

    ``metrics`` replaces the kind's metrics with the user's ``fn(logits, labels) -> (total, count)``
    callables (they need every logit, so the head runs everywhere then). ``on_scored`` (when set) is called
    after each candidate, in process: the progress bar of a serial run.
    """

    on_scored: Callable[[], None] | None = None

    def __init__(self, engine: MergeEngine, benchmarks: dict[str, BenchmarkData], batch_size: int,
                 memory_budget: int, metrics: dict[str, Metric] | None = None, savings: bool = True,
                 weights: dict[str, torch.Tensor] | None = None) -> None:
        self.engine = engine
        self.benchmarks = benchmarks
        self.weights = weights or {}  # per benchmark, one weight per item (anchors); default 1
        self.memory_budget = memory_budget
        self.custom = metrics
        self.prefix_sharing = savings
        self.head_at_labels = savings and metrics is None
        self.packing = savings
        self.length_sorted = savings  # batches of rows of about one length (:meth:`BenchmarkData.batch_rows`)
        self.layers_saved = 0
        self.layers_run = 0
        self.set_batch_size(batch_size)

    def halve_batch_size(self) -> bool:
        """After running out of memory (GPU or CPU): halve the batch size, kept for the rest of the run; False
        when it is 1 already."""
        if self.batch_size == 1:
            return False
        self.set_batch_size(self.batch_size // 2)
        log.warning("out of memory while scoring; retrying with batch size %d", self.batch_size)
        release_cached_memory()
        return True

    def set_batch_size(self, batch_size: int) -> None:
        self.batch_size = batch_size
        device = next(self.engine.model.parameters()).device
        self.batches = {name: [self._packed(batch, data) for batch in data.batches(batch_size, device,
                                                                                  self.length_sorted)]
                        for name, data in self.benchmarks.items()}

    def _packed(self, batch: Batch, data: BenchmarkData) -> Batch:
        """``batch`` with its items' choices packed (when the savings are on and it has choices to pack), the
        packed rows' attention mask additive in the model's dtype (what eager and SDPA attention both take)."""
        if not self.packing or data.kind != "multiple_choice":
            return batch
        packed = pack_choices(batch, data.item[batch.rows])
        if packed is None:
            return batch
        dtype = next(self.engine.model.parameters()).dtype
        mask = torch.zeros(packed.attention_mask.shape, dtype=dtype, device=packed.attention_mask.device)
        mask.masked_fill_(~packed.attention_mask, torch.finfo(dtype).min)
        return Batch(packed.rows, packed.input_ids, packed.labels, mask, packed.position_ids, packed.scored_rows)

    # -- one forward pass -------------------------------------------------------------------------------
    def _forward(self, model: nn.Module, batch: Batch, start: _Kept | None, batch_index: int,
                 keep: Sequence[int]) -> tuple[torch.Tensor, dict[int, object]]:
        """Logits (at scored positions, or all) of one batch; start after ``start``'s layers; return the
        outputs of the layers counted in ``keep``."""
        layers = decoder_layers(model)[1]
        originals = list(layers)
        captured: dict[int, object] = {}
        handles = []
        for count in keep:
            def capture(module, args, output, count=count):
                captured[count] = output
            handles.append(originals[count - 1].register_forward_hook(capture))
        if self.head_at_labels:
            scored = batch.labels[:, 1:] != IGNORE_INDEX

            def gather(module, args):
                return (args[0][:, :-1][scored].unsqueeze(0), *args[1:])
            handles.append(model.get_output_embeddings().register_forward_pre_hook(gather))
        try:
            if start is not None:
                for i in range(start.layers):
                    layers[i] = _Replay(originals[i], start.outputs[batch_index])
            logits = model(**model_inputs(batch)).logits
        finally:
            for handle in handles:
                handle.remove()
            for i in range(start.layers if start is not None else 0):
                layers[i] = originals[i]
        return logits, captured

    def _measure(self, logits_per_batch: dict[str, list[torch.Tensor]]) -> tuple[dict, dict[str, dict]]:
        """``({benchmark: {metric: value}}, {benchmark: item table})`` from each batch's logits (see
        :mod:`.items`; custom metrics have no table)."""
        results, tables = {}, {}
        for name, data in self.benchmarks.items():
            batches = self.batches[name]
            if self.custom is not None:
                values = {}
                for metric_name, metric in self.custom.items():
                    totals = [metric(logits, batch.labels) for logits, batch in zip(logits_per_batch[name], batches)]
                    values[metric_name] = float(sum(t for t, _ in totals)) / float(sum(c for _, c in totals))
                results[name] = values
                continue
            stats = RowStatistics(len(data))
            for logits, batch in zip(logits_per_batch[name], batches):
                scored = logits[0] if self.head_at_labels else \
                    logits[:, :-1][batch.labels[:, 1:] != IGNORE_INDEX]
                stats.add(batch.rows, row_statistics(scored, batch.labels, batch.scored_rows, len(batch.rows)))
            tables[name] = item_table(stats.nll, stats.tokens, stats.right, data)
            results[name] = weighted_metrics(tables[name], data.kind, self.weights.get(name))
        return results, tables

    # -- a population -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, plans: Sequence[MergePlan], on_error: Callable[[int, Exception], None]) -> list:
        """``(metrics, item tables)`` of every plan, ``({benchmark: {metric: value}}, {benchmark: table})``
        (None where ``on_error`` was called).

        Out of memory, the batch size is halved (and kept) down to 1 and the candidate scored again.
        """
        order = sorted(range(len(plans)), key=lambda i: plans[i].sort_key()) if self.prefix_sharing else \
            list(range(len(plans)))
        shared = [shared_layers(plans[a], plans[b]) if self.prefix_sharing else 0
                  for a, b in zip(order[:-1], order[1:])]
        results: list = [None] * len(plans)
        kept: list[_Kept] = []
        for position, index in enumerate(order):
            reusable = shared[position - 1] if position else 0
            future: list[int] = []
            for count in shared[position:]:
                future.append(min(count, future[-1]) if future else count)
            while True:
                while kept and kept[-1].layers > reusable:
                    kept.pop()
                start = kept[-1] if kept else None
                want = sorted({c for c in future if c > (start.layers if start else 0)})
                try:
                    results[index] = self._score_one(plans[index], start, want, kept)
                except Exception as exc:  # one candidate's failure must not stop the others
                    if out_of_memory(exc):
                        kept.clear()
                        if self.halve_batch_size():
                            continue
                    on_error(index, exc)
                break
            if self.on_scored is not None:
                self.on_scored()
        return results

    def _score_one(self, plan: MergePlan, start: _Kept | None, want: list[int], kept: list[_Kept]) -> dict:
        skip = frozenset(part for part, _ in plan.parts[1:1 + start.layers]) if start else frozenset()
        if start and not self._head_reads_embeddings():
            skip |= {"embed"}
        model = self.engine.apply(plan, skip=skip)
        depth = plan.num_layers
        want = [count for count in want if count <= depth]
        budget = self.memory_budget - sum(k.size for k in kept)
        logits: dict[str, list[torch.Tensor]] = {}
        outputs: dict[int, list] = {count: [] for count in want}
        batch_index = 0
        for name, batches in self.batches.items():
            logits[name] = []
            for batch in batches:
                values, captured = self._forward(model, batch, start, batch_index, want)
                logits[name].append(values)
                for count in want:
                    outputs[count].append(captured[count])
                batch_index += 1
        self.layers_run += depth - (start.layers if start else 0)
        self.layers_saved += start.layers if start else 0
        for count in want:
            size = sum(_size(t) for t in outputs[count])
            if size > budget:
                break
            budget -= size
            kept.append(_Kept(count, outputs[count], size))
        return self._measure(logits)

    def _head_reads_embeddings(self) -> bool:
        model = self.engine.model
        head = model.get_output_embeddings()
        return head is not None and head.weight is model.get_input_embeddings().weight

    # -- the check against the plain path ------------------------------------------------------------------
    def check_savings(self, plan: MergePlan) -> None:
        """Score ``plan`` twice (the second time replaying every layer) on the first batch of each benchmark,
        and compare with the plain path; where the savings change a metric beyond float rounding, switch
        them off for this process and say so. Out of memory, the batch size is halved as in :meth:`score`."""
        while True:
            try:
                return self._check_savings(plan)
            except Exception as exc:
                if not (out_of_memory(exc) and self.halve_batch_size()):
                    raise

    def _check_savings(self, plan: MergePlan) -> None:
        if not (self.prefix_sharing or self.head_at_labels or self.packing):
            return
        probe = {name: data.subset(self.batches[name][0].rows.sort().values)
                 for name, data in self.benchmarks.items()}
        plain = {name: benchmark_metrics(self.engine.apply(plan), data, self.batch_size)
                 for name, data in probe.items()}
        trial = PopulationScorer(self.engine, probe, self.batch_size, self.memory_budget)
        trial.head_at_labels = self.head_at_labels

        def fail(index: int, exc: Exception) -> None:
            raise exc

        problem = None
        try:
            results = trial.score([plan, plan], fail)
        except Exception as exc:
            if out_of_memory(exc):
                raise
            results, problem = [], f"raise {type(exc).__name__}: {exc}"
        for result, _ in results:
            problem = next((f"change {name}.{metric} ({result[name][metric]} vs {value})"
                            for name, metrics in plain.items() for metric, value in metrics.items()
                            if abs(result[name][metric] - value) > 1e-4 * max(1.0, abs(value))), None)
            if problem:
                break
        if problem:
            log.warning("%s: shared prefixes, head-at-labels and packed choices %s; scoring without them",
                        type(self.engine.model).__name__, problem)
            self.prefix_sharing = self.head_at_labels = self.packing = False
            self.set_batch_size(self.batch_size)
