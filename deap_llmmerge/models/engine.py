"""The merge engine: writes a plan into a reusable model, in place.

The engine keeps one skeleton model per depth (the sources' own depth, and the depths stacked plans ask
for), remembers which step each of its parts holds, and rewrites only the parts whose step changed, so
scoring a population whose genomes share parts copies little.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections import OrderedDict

import torch
from torch import nn

from ..devices import mapped_from_file
from ..methods import MERGE_METHODS, MergeInputs
from ..methods.sparsify import draw_generator
from .parts import decoder_layers, is_layer_part, layer_index, split_parts
from .plans import MergePlan, PartMerge
from .sources import SourcePool

__all__ = ["MergeEngine", "step_seed"]

log = logging.getLogger(__name__)


def step_seed(step: PartMerge, part: str, tensor: str) -> int:
    """The seed of a random method's draws for one tensor: from the run seed, the part, the tensor name and
    the step's parameters (the genome's genes), identical in every process and after every resume."""
    text = repr((part, tensor, step.method, step.sources, step.source_part, step.params, step.base))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


class _Skeleton:
    """One model and what the engine knows about it: where each part's parameters are, what they hold."""

    def __init__(self, model: nn.Module, reference_depth: int) -> None:
        self.model = model
        params = dict(model.named_parameters())
        self.targets = {part: [(inner, params[full]) for full, inner in names]
                        for part, names in split_parts(model).items()}
        # weights still in a mapped file's pages (a reference loaded from safetensors): the first write
        # of each goes to new memory instead, which is cheaper than copying the pages it overwrites
        self.mapped = {id(p) for p, mapped in zip(params.values(), mapped_from_file(list(params.values()))) if mapped}
        self.layers = decoder_layers(model)[1]
        self.loaded: dict[str, PartMerge] = {}
        self.layer_sources = [i % reference_depth for i in range(len(self.layers))]


class MergeEngine:
    """Builds plans into skeleton models on ``device``; ``max_skeletons`` depths are kept at a time."""

    def __init__(self, pool: SourcePool, model: nn.Module, options: dict | None = None,
                 max_skeletons: int = 3) -> None:
        self.pool = pool
        self.options = options or {}
        self.max_skeletons = max_skeletons
        self.reference_depth = pool.num_layers
        self.skeletons: OrderedDict[int, _Skeleton] = OrderedDict(
            {len(decoder_layers(model)[1]): _Skeleton(model, self.reference_depth)})

    @property
    def model(self) -> nn.Module:
        """The skeleton of the sources' own depth."""
        return self.skeletons[self.reference_depth].model

    @property
    def loaded(self) -> dict[str, PartMerge]:
        return self.skeletons[self.reference_depth].loaded

    def skeleton(self, depth: int) -> _Skeleton:
        """The skeleton of ``depth`` layers, built on first use from the reference config."""
        if depth in self.skeletons:
            self.skeletons.move_to_end(depth)
            return self.skeletons[depth]
        reference = self.model
        config = copy.deepcopy(reference.config)
        for name in ("num_hidden_layers", "n_layer"):
            if hasattr(config, name):
                setattr(config, name, depth)
        for key, values in self.pool.layout.config_lists(depth).items():
            setattr(config, key, values)
        device = next(reference.parameters()).device
        dtype = next(reference.parameters()).dtype
        with torch.inference_mode(False), torch.device(device):  # weights the engine may write outside inference
            model = type(reference)(config).to(dtype).eval()
        self.pool.layout.adopt_outside(model)
        if len(self.skeletons) >= self.max_skeletons:
            stale = next(depth for depth in self.skeletons if depth != self.reference_depth)
            del self.skeletons[stale]
        self.skeletons[depth] = _Skeleton(model, self.reference_depth)
        return self.skeletons[depth]

    @torch.no_grad()
    def apply(self, plan: MergePlan, skip: frozenset[str] = frozenset()) -> nn.Module:
        """Make a skeleton hold ``plan``'s weights (all parts but ``skip``) and return it."""
        plan.validate(self.pool.part_names, len(self.pool.tensors), MERGE_METHODS)
        skeleton = self.skeleton(plan.num_layers)
        for part, step in plan.parts:
            if part in skip or skeleton.loaded.get(part) == step:
                continue
            skeleton.loaded.pop(part, None)
            self._write(skeleton, part, step)
            skeleton.loaded[part] = step
            if is_layer_part(part):
                self._follow_source_layer(skeleton, layer_index(part), layer_index(step.source_part))
        return skeleton.model

    def _write(self, skeleton: _Skeleton, part: str, step: PartMerge) -> None:
        method = MERGE_METHODS[step.method]
        params = step.kwargs
        for inner, target in skeleton.targets[part]:
            if id(target) in skeleton.mapped:
                skeleton.mapped.discard(id(target))
                target.data = torch.empty_like(target)
            tensors = [self.pool.tensor(k, step.source_part, inner) for k in step.sources]
            if step.method == "take":
                target.copy_(tensors[0])
                continue
            base = None if step.base is None else self.pool.tensor(step.base, step.source_part, inner)
            keys = [(k, step.base, step.source_part, inner) for k in step.sources]
            inputs = MergeInputs(tensors, base, self.pool.derived, keys, out=target)
            generator = None
            if method.random:
                generator = draw_generator(step_seed(step, part, inner))
            merged = method.merge_inputs(inputs, params, generator, self.options.get(step.method))
            if merged is not target:
                target.copy_(merged)

    def _follow_source_layer(self, skeleton: _Skeleton, output: int, source: int) -> None:
        """An output layer built from source layer ``source`` computes as that layer does (see
        :class:`~deap_llmmerge.parts.LayerLayout`)."""
        if skeleton.layer_sources[output] == source:
            return
        self.pool.layout.follow(skeleton.model, output, source)
        skeleton.layer_sources[output] = source
