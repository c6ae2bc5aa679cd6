"""The same merge as a mergekit config (``mergekit.yaml``), for users who build or share merges with mergekit.

mergekit (0.1.5) takes one merge method per config and builds the model slice by slice: the embeddings
from the first slice's sources, the final norm and head from the last slice's, and an empty slice
(``layer_range: [0, 0]`` or ``[N, N]``) selects them without adding a layer. So every plan becomes:

    slices: [embed slice (empty), one slice per run of output layers, head slice (empty)]

with the plan's dominant method as ``merge_method`` and, per slice, per-source parameters. A part that
takes one source is written as that method's parameters for "exactly this source" (weight 1 on it, the
others 0, density 1, and ``lambda: 1`` in its slice when the run scales task vectors). Every part that
mergekit would not build as deap-llmmerge did is named in a ``# NOTE`` comment, with the reason: a method
other than the config's, a take that the config's method cannot express (``model_stock``), or a random
method's draws (mergekit draws its own DARE/DELLA masks); so are GGUF sources. The file stays valid YAML.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..methods import MERGE_METHODS
from .adapters import is_adapter
from .parts import is_layer_part, layer_index
from .plans import MergePlan, PartMerge

__all__ = ["mergekit_config"]


def _method_of(plan: MergePlan) -> str:
    methods = Counter(step.method for _, step in plan.parts if step.method != "take")
    if not methods:
        return "passthrough"
    return methods.most_common(1)[0][0]


def _della_epsilon(density: float, epsilon: float) -> float:
    """The epsilon della uses at ``density`` (clipped so that both ends stay in (0, 1), as our kernel does;
    mergekit refuses any other)."""
    return epsilon if density >= 1 else min(epsilon, 0.999 * density, 0.999 * (1 - density))


def _sources(step: PartMerge, method: str, n_sources: int, base: int | None,
             options: dict) -> tuple[list[int], dict[int, dict], dict]:
    """(pool indices in the slice, per-source parameters, slice parameters) of ``step`` under ``method``."""
    spec = MERGE_METHODS.get(method)
    if method == "passthrough":
        return [step.sources[0]], {}, {}
    if step.method == method:
        params = step.kwargs
        per_source = {k: {name: float(params[name][i]) for name in spec.per_source}
                      for i, k in enumerate(step.sources)}
        if method == "della":
            for values in per_source.values():
                values["epsilon"] = _della_epsilon(values["density"], values["epsilon"])
        shared = {name: float(params[name][0]) for name in spec.per_part}
        indices = list(step.sources)
    else:  # a take step, written as this method's parameters for exactly that source
        taken = step.sources[0]
        if method == "slerp":
            return [0, 1], {}, {"t": 0.0 if taken == 0 else 1.0}
        if method == "nearswap":  # t = 0 keeps the base; a t beyond every |base - source| takes the source
            indices = [k for k in range(n_sources) if k != base]
            return indices + [base], {}, {"t": 0.0 if taken == base else 1e6}
        if not spec.takes_one_source:  # (sce: a slice of one source and the base would take it, but mergekit
            # 0.1.5 then refuses the head: "Base input is not present")
            indices = [k for k in range(n_sources) if k != base] if spec.needs_base else list(range(n_sources))
            per_source = {}
        elif spec.needs_base:
            indices = [k for k in range(n_sources) if k != base]
            per_source = {k: {name: (1.0 if k == taken else 0.0) if name == "weight" else 1.0 if name == "density"
                              else float(spec.defaults.get(name, 0.0)) for name in spec.per_source}
                          for k in indices}
        else:
            indices = list(range(n_sources))
            per_source = {k: {"weight": 1.0 if k == taken else 0.0} for k in indices}
        shared = {"lambda": 1.0} if float(options.get("lambda", 1.0)) != 1.0 else {}  # a take is unscaled
    if spec.needs_base and base is not None and base not in indices:
        indices.append(base)
    return indices, per_source, shared


def mergekit_config(plan: MergePlan, models: Sequence[str], num_layers: Sequence[int], n_sources: int,
                    base: int | None, options: dict | None = None, dtype: str = "float32") -> str:
    """``mergekit.yaml`` text for ``plan``: ``models[k]`` is the path of pool entry k (sources, then the
    base model when separate), ``num_layers[k]`` its depth."""
    method = _method_of(plan)
    method_options = {**(MERGE_METHODS[method].options if method in MERGE_METHODS else {}),
                      **(options or {}).get(method, {})}
    notes: list[str] = []
    for k, path in enumerate(models):
        if str(path).endswith(".gguf"):
            notes.append(f"source {k} is a GGUF file ({path}); mergekit needs it converted to safetensors first")
        if is_adapter(Path(path)):
            notes.append(f"source {k} is a PEFT adapter ({path}); mergekit takes it as BASE_FOLDER+{path}")
    differ: dict[str, list[str]] = {}  # reason -> the parts mergekit builds otherwise
    slices = []
    previous: tuple | None = None
    for part, step in plan.parts:
        if step.method not in ("take", method):
            differ.setdefault(f"use another method than {method} (mergekit takes one per config); their slices "
                              f"below are written as {method} for their first source", []).append(part)
            step = PartMerge("take", (step.sources[0],), step.source_part)
        elif step.method == "take" and method in MERGE_METHODS and not MERGE_METHODS[method].takes_one_source:
            differ.setdefault(f"take one source, which {method} cannot express; their slices below are "
                              f"{method} merges", []).append(part)
        elif step.method == method and MERGE_METHODS[method].random:
            differ.setdefault(f"use {method}, which draws random masks: mergekit draws its own (same method, same "
                              "parameters, other draws)", []).append(part)
        indices, per_source, shared = _sources(step, method, n_sources, base, method_options)
        if is_layer_part(part):
            start = layer_index(step.source_part)
        else:
            start = 0 if part == "embed" else None
        key = (part == "head", tuple(indices), tuple(sorted((k, tuple(v.items())) for k, v in per_source.items())),
               tuple(shared.items()))
        if is_layer_part(part) and previous is not None and previous[0] == key and slices[-1]["_next"] == start:
            for source in slices[-1]["sources"]:
                source["layer_range"][1] += 1
            slices[-1]["_next"] += 1
            continue
        entries = []
        for k in indices:
            if start is None:
                rng = [num_layers[k], num_layers[k]]
            elif is_layer_part(part):
                rng = [start, start + 1]
            else:
                rng = [0, 0]
            entry = {"model": str(models[k]), "layer_range": rng}
            if k in per_source:
                entry["parameters"] = per_source[k]
            entries.append(entry)
        slice_ = {"sources": entries, "_next": (start + 1) if is_layer_part(part) else None}
        if shared:
            slice_["parameters"] = shared
        slices.append(slice_)
        previous = (key,) if is_layer_part(part) else None
    for slice_ in slices:
        del slice_["_next"]
    config: dict = {"merge_method": method, "slices": slices, "dtype": dtype}
    spec = MERGE_METHODS.get(method)
    if method == "slerp":
        config["base_model"] = str(models[0])
    elif spec is not None and spec.needs_base and base is not None:
        config["base_model"] = str(models[base])
    if spec is not None and spec.options:
        config["parameters"] = {**spec.options, **((options or {}).get(method, {}))}
    notes += [f"parts {', '.join(parts)} {reason}: NOT what deap-llmmerge built" for reason, parts in differ.items()]
    header = ["# mergekit config of the merge deap-llmmerge built (mergekit-yaml mergekit.yaml OUT)"]
    header += [f"# NOTE: {note}" for note in notes]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
