"""Does the best merge beat what a user would try first? Item by item, against each pure source and each
seeded recipe (a method at mergekit's defaults), on the fitness items (kept from the search) and on the
validation file (scored here): the mean difference and its 95% paired-bootstrap interval."""

from __future__ import annotations

from ..evolve.ga import LLMMergeGA
from ..scoring.benchmarks import BenchmarkData
from ..scoring.paired import compare

__all__ = ["references", "compare_with_references", "no_merge"]


def references(ga: LLMMergeGA, best: list) -> dict[str, list]:
    """``{label: genome}`` of every pure source and seeded recipe, one per merge, other than the best's."""
    found = {f"source {k} ({source.name})": ga.toolbox.pure(source=k) for k, source in enumerate(ga.pool.sources)}
    for genome in ga.evaluator.family.seeds(list, ga.evaluator.space):
        methods = sorted({step.method for _, step in ga.evaluator.decode(genome).parts if step.method != "take"})
        found[f"{'+'.join(methods) or 'seed'} at mergekit's defaults"] = genome
    seen = {ga.cached_map.same.key(best)}
    distinct = {}
    for label, genome in found.items():  # a seed may build a pure source (one source besides the base)
        key = ga.cached_map.same.key(genome)
        if key not in seen:
            seen.add(key)
            distinct[label] = genome
    return distinct


def no_merge(ga: LLMMergeGA, best: list) -> str | None:
    """What the best candidate is when it is no merge at all: a pure source or a seeded recipe (its label)."""
    key = ga.cached_map.same.key(best)
    found = {f"source {k} ({source.name})": ga.toolbox.pure(source=k) for k, source in enumerate(ga.pool.sources)}
    for genome in ga.evaluator.family.seeds(list, ga.evaluator.space):
        found.setdefault("the seeded default recipe", genome)
    return next((label for label, genome in found.items() if ga.cached_map.same.key(genome) == key), None)


def compare_with_references(ga: LLMMergeGA, best: list, validation: dict[str, BenchmarkData]) -> tuple[dict, dict]:
    """``(the best's validation metrics, {"fitness": rows, "validation": rows})`` (see
    :func:`~deap_llmmerge.scoring.paired.compare` for a row)."""
    others = references(ga, best)
    items = ga.cached_map.items
    fitness = compare(items.get(ga.cached_map.same.key(best), {}),
                      {label: items[key] for label, genome in others.items()
                       if (key := ga.cached_map.same.key(genome)) in items})

    def held_out(genome: list) -> dict:
        model = ga.evaluator.merged_model(genome)
        device = next(model.parameters()).device
        return {name: ga.evaluator.measure_items(model, data.to(device)) for name, data in validation.items()}

    mine = held_out(best)
    theirs = {label: {name: scores for name, (_, scores) in held_out(genome).items()}
              for label, genome in others.items()} if validation else {}
    rows = compare({name: scores for name, (_, scores) in mine.items()}, theirs)
    return {name: metrics for name, (metrics, _) in mine.items()}, {"fitness": fitness, "validation": rows}
