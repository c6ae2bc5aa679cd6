"""The original design's ways to measure a model: ``evaluate``, ``evaluate_accuracy``, ``evaluate_loss``, on
the fitness benchmarks or on other data (a mixin of :class:`~deap_llmmerge.evolve.ga.LLMMergeGA`)."""

from __future__ import annotations

from torch import nn

from ..scoring.benchmarks import BenchmarkData
from ..scoring.metrics import score
from .toolbox import as_benchmarks

__all__ = ["ModelMeasures"]


class ModelMeasures:
    """Needs ``self.evaluator`` and ``self.custom_metrics`` (the user's accuracy and loss, or None)."""

    def evaluate(self, model: nn.Module, data: object | None = None) -> tuple[float, ...]:
        """The objectives' values for ``model`` on the fitness data, or ``(accuracy, loss)`` on ``data``
        when given (one benchmark, or named ones: then ``{name: (accuracy, loss)}``)."""
        if self.custom_metrics is not None:
            data = self.evaluator.state.benchmarks[next(iter(self.evaluator.state.benchmarks))] \
                if data is None else BenchmarkData.coerce(data)
            return score(model, data, self.custom_metrics, self.evaluator.state.scorer.batch_size)
        if data is None:
            metrics = {name: self.evaluator.measure(model, bench)
                       for name, bench in self.evaluator.state.benchmarks.items()}
            return tuple(o.value(metrics) for o in self.evaluator.objectives)
        named = as_benchmarks(data)
        device = next(model.parameters()).device
        values = {name: self.evaluator.measure(model, bench.to(device)) for name, bench in named.items()}
        if len(values) == 1:
            only = next(iter(values.values()))
            return only["accuracy"], only["loss"]
        return {name: (v["accuracy"], v["loss"]) for name, v in values.items()}

    def evaluate_accuracy(self, model: nn.Module, data: object | None = None) -> float:
        """Accuracy of ``model`` on the (first) fitness benchmark, or on ``data``."""
        return self._first(model, data, "accuracy")

    def evaluate_loss(self, model: nn.Module, data: object | None = None) -> float:
        """Loss of ``model`` on the (first) fitness benchmark, or on ``data``."""
        return self._first(model, data, "loss")

    def _first(self, model: nn.Module, data: object | None, metric: str) -> float:
        if self.custom_metrics is not None:
            return self.evaluate(model, data)[0 if metric == "accuracy" else 1]
        if data is None:
            benchmarks = self.evaluator.state.benchmarks
            return self.evaluator.measure(model, benchmarks[next(iter(benchmarks))])[metric]
        bench = BenchmarkData.coerce(data).to(next(model.parameters()).device)
        return self.evaluator.measure(model, bench)[metric]
