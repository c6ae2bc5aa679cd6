"""Genome families: decoding, pure sources, seeds, bounds and gene sharing, over every registered family."""

import random

import pytest
import torch
from conftest import FAMILY_CASES, tiny_benchmark, tiny_model

from deap_llmmerge import ConfigError, GenomeSpace, InvalidGenomeError, LLMMergeGA, make_toolbox
from deap_llmmerge.genomes.methods import decodeMethods, genome_bounds

PARTS = ("embed", "layers.0", "layers.1", "layers.2", "layers.3", "layers.4", "head")


def _sources(n=2):
    return [tiny_model("llama", seed) for seed in range(1, n + 1)]


@pytest.mark.parametrize("case", list(FAMILY_CASES))
def test_every_pure_genome_builds_its_source_exactly(case):
    sources = _sources()
    toolbox = make_toolbox(sources, tiny_benchmark(), **FAMILY_CASES[case])
    ids = tiny_benchmark()["input_ids"]
    for k, source in enumerate(sources):
        plan = toolbox.evaluate.func.decode(toolbox.pure(source=k))
        assert all(step.method == "take" and step.sources == (k,) for _, step in plan.parts)
        with torch.no_grad():
            merged = toolbox.evaluate.func.merged_model(toolbox.pure(source=k))
            assert torch.equal(merged(input_ids=ids).logits, source(input_ids=ids).logits)


@pytest.mark.parametrize("case", list(FAMILY_CASES))
def test_random_genomes_decode_and_stay_valid_under_the_operators(case):
    toolbox = make_toolbox(_sources(3), tiny_benchmark(), mutation_rate=0.5, **FAMILY_CASES[case])
    decode = toolbox.evaluate.func.decode
    random.seed(4)
    population = toolbox.population(n=12)
    for _ in range(5):
        for a, b in zip(population[::2], population[1::2]):
            toolbox.mate(a, b)
        for ind in population:
            toolbox.mutate(ind)
        for ind in population:
            decode(ind)


@pytest.mark.parametrize("granularity", ["layer", "group:2", "group:10", "global"])
def test_granularity_shares_genes_between_consecutive_layers(granularity):
    space = GenomeSpace(PARTS, 2, granularity=granularity, method="linear")
    groups = {"layer": 7, "group:2": 5, "group:10": 3, "global": 1}[granularity]
    assert len(space.groups()) == groups
    random.seed(0)
    low, up, _ = genome_bounds(space)
    genome = [random.uniform(a, b) for a, b in zip(low, up)]
    plan = decodeMethods(genome, space)
    steps = dict(plan.parts)
    if granularity == "group:2":
        assert steps["layers.0"].params == steps["layers.1"].params != steps["layers.2"].params
        assert steps["layers.4"].params != steps["head"].params
    if granularity == "global":
        assert len({step.params for step in steps.values()}) == 1


def test_bad_granularity_is_named():
    with pytest.raises(ConfigError, match="genome_granularity 'group:0'"):
        GenomeSpace(PARTS, 2, granularity="group:0")


def test_methods_genes_are_bounded_and_negative_weights_widen_weights():
    space = GenomeSpace(PARTS, 2, method="ties")
    low, up, _ = genome_bounds(space)
    assert (low[:4], up[:4]) == ([0.0, 0.1, 0.0, 0.1], [1.0, 1.0, 1.0, 1.0])
    wide = GenomeSpace(PARTS, 2, method="ties", negative_weights=True)
    assert genome_bounds(wide)[0][:2] == [-0.5, 0.1] and genome_bounds(wide)[1][:2] == [1.5, 1.0]
    with pytest.raises(InvalidGenomeError, match="outside"):
        decodeMethods([2.0] + [0.5] * 27, space)


def test_task_vector_methods_merge_the_sources_other_than_the_base():
    space = GenomeSpace(PARTS, 3, base_index=0, method="ties")
    genome = [0.5, 0.5] * 3 * len(PARTS)
    plan = decodeMethods(genome, space)
    step = dict(plan.parts)["layers.0"]
    assert step.sources == (1, 2) and step.base == 0
    separate = decodeMethods(genome, GenomeSpace(PARTS, 3, base_index=3, method="ties"))
    assert dict(separate.parts)["layers.0"].sources == (0, 1, 2) and dict(separate.parts)["layers.0"].base == 3


def test_the_default_recipe_of_the_method_is_in_the_first_generation():
    toolbox = make_toolbox(_sources(3), tiny_benchmark(), "methods", method="ties")
    population = toolbox.population(n=6)
    plan = toolbox.evaluate.func.decode(population[3])
    step = dict(plan.parts)["layers.1"]
    assert step.method == "ties" and step.kwargs == {"weight": (1.0, 1.0), "density": (1.0, 1.0)}


def test_search_has_a_method_gene_per_group():
    toolbox = make_toolbox(_sources(), tiny_benchmark(), "methods", method="search", genome_granularity="global")
    space = toolbox.evaluate.func.space
    assert "slerp" in space.search_methods and "model_stock" not in space.search_methods  # 1 source besides base
    methods = {toolbox.evaluate.func.decode(ind).parts[1][1].method for ind in toolbox.population(n=12)}
    assert {"linear", "take"} <= methods and len(methods) >= 4


@pytest.mark.parametrize(("settings", "message"), [
    ({"method": "slerp"}, "method slerp cannot merge 3 source"),
    ({"method": "model_stock"}, "model_stock has no parameters to search; use method: search"),
    ({"method": "tie"}, "unknown merge method 'tie'"),
    ({}, "genome 'methods' needs a method"),
])
def test_methods_settings_that_cannot_work_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        make_toolbox(_sources(3), tiny_benchmark(), "methods", base_model=tiny_model("llama", 9), **settings)


def test_a_separate_base_model_is_used_for_task_vectors_and_pure_sources_stay_exact():
    base, sources = tiny_model("llama", 9), _sources()
    ga = LLMMergeGA(sources, tiny_benchmark(), population_size=4, max_generations=0, genome="methods",
                    method="task_arithmetic", base_model=base)
    n = len(ga.pool.part_names)
    merged = dict(ga.merge_layers([0.5, 0.5] * n).named_parameters())
    name = "model.layers.1.mlp.up_proj.weight"
    want = {k: dict(m.named_parameters())[name] for k, m in enumerate([*sources, base])}
    torch.testing.assert_close(merged[name], want[2] + 0.5 * (want[0] - want[2]) + 0.5 * (want[1] - want[2]))
    ids = tiny_benchmark()["input_ids"]
    with torch.no_grad():
        for k, source in enumerate(sources):
            model = ga.merge_layers(ga.toolbox.pure(source=k))
            assert torch.equal(model(input_ids=ids).logits, source(input_ids=ids).logits)
