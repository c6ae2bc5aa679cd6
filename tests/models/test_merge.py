"""What a user notices about merged weights: pure genomes reproduce their source exactly."""

import pytest
import torch
from conftest import tiny_benchmark, tiny_model

from deap_llmmerge import GenomeSpace, LLMMergeGA, SourcePool
from deap_llmmerge.devices import mapped_from_file
from deap_llmmerge.genomes.blend import decodeBlend
from deap_llmmerge.genomes.choice import decodeChoice
from deap_llmmerge.models.engine import MergeEngine


def space_of(pool):
    return GenomeSpace(tuple(pool.part_names), pool.num_sources)


def _ga(sources, genome="choice"):
    return LLMMergeGA(sources, tiny_benchmark(), population_size=4, max_generations=0, genome=genome)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_pure_choice_genome_gives_the_source_logits(pair):
    ga = _ga(list(pair))
    ids = tiny_benchmark()["input_ids"]
    for k, source in enumerate(pair):
        merged = ga.merge_layers([k] * len(ga.pool.part_names))
        assert torch.equal(_logits(merged, ids), _logits(source, ids))
        for (name, mine), (_, theirs) in zip(merged.named_parameters(), source.named_parameters()):
            assert torch.equal(mine, theirs), name


def test_mixed_choice_genome_takes_each_part_from_its_source(pair):
    ga = _ga(list(pair))
    parts = ga.pool.part_names
    genome = [i % 2 for i in range(len(parts))]
    merged = dict(ga.merge_layers(genome).named_parameters())
    sources = [dict(model.named_parameters()) for model in pair]
    for part, gene in zip(parts, genome):
        for name, _ in ga.pool.parts[part]:
            assert torch.equal(merged[name], sources[gene][name]), (part, name)
    assert not torch.isnan(_logits(ga.merge_layers(genome), tiny_benchmark()["input_ids"])).any()


def test_blend_one_zero_equals_source_zero(pair):
    ga = _ga(list(pair), genome="blend")
    genome = [1.0, 0.0] * len(ga.pool.part_names)
    ids = tiny_benchmark()["input_ids"]
    assert torch.equal(_logits(ga.merge_layers(genome), ids), _logits(pair[0], ids))


def test_blend_half_half_is_the_average_of_the_weights():
    a, b = tiny_model("llama", 1), tiny_model("llama", 2)
    pool = SourcePool([a, b])
    plan = decodeBlend([0.5, 0.5] * len(pool.part_names), space_of(pool))
    merged = dict(MergeEngine(pool, pool.new_skeleton()).apply(plan).named_parameters())
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(merged[name], (pa + pb) / 2)


def test_merge_layers_is_not_changed_by_later_evaluations(pair):
    ga = _ga(list(pair))
    n = len(ga.pool.part_names)
    kept = ga.merge_layers([0] * n)
    before = {name: p.clone() for name, p in kept.named_parameters()}
    ga.toolbox.evaluate([1] * n)
    ga.toolbox.evaluate([0, 1] * (n // 2) + [0] * (n % 2))
    for name, param in kept.named_parameters():
        assert torch.equal(param, before[name]), name


def test_sources_are_never_written_to(pair):
    originals = [{name: p.clone() for name, p in model.named_parameters()} for model in pair]
    ga = _ga(list(pair), genome="blend")
    n = len(ga.pool.part_names)
    ga.toolbox.evaluate([0.3, 0.7] * n)
    ga.toolbox.evaluate([1.0, 0.0] * n)
    for model, original in zip(pair, originals):
        for name, param in model.named_parameters():
            assert torch.equal(param, original[name]), name


def test_engine_writes_into_one_skeleton_and_skips_unchanged_parts():
    pool = SourcePool([tiny_model("llama", 1), tiny_model("llama", 2)])
    skeleton = pool.new_skeleton()
    engine = MergeEngine(pool, skeleton)
    n = len(pool.part_names)
    first = engine.apply(decodeChoice([0] * n, space_of(pool)))
    embed = dict(skeleton.named_parameters())["model.embed_tokens.weight"]
    pointer = embed.data_ptr()
    second = engine.apply(decodeChoice([0] + [1] * (n - 1), space_of(pool)))
    assert first is second is skeleton
    assert embed.data_ptr() == pointer
    assert engine.loaded["layers.0"].sources == (1,)


def test_skeleton_loaded_from_safetensors_gives_the_same_merge_as_a_copied_one(saved_llamas):
    """The first skeleton of a pool is the reference model as transformers maps it from its file; the engine
    writes each of its tensors into new memory on first use. Merges, and the parts left alone, are as in
    a skeleton that was copied."""
    pool = SourcePool(saved_llamas)
    mapped, copied = pool.new_skeleton(), pool.new_skeleton()
    weights = list(mapped.parameters())
    if not any(mapped_from_file(weights)):
        pytest.skip("transformers did not map the weights from the file here")
    n = len(pool.part_names)
    plan = decodeBlend([0.3, 0.7] * n, space_of(pool))
    ours = dict(MergeEngine(pool, mapped).apply(plan, skip=frozenset({"head"})).named_parameters())
    theirs = dict(MergeEngine(pool, copied).apply(plan, skip=frozenset({"head"})).named_parameters())
    for name, param in theirs.items():
        assert torch.equal(ours[name], param), name
    head = {full for full, _ in pool.parts["head"]}
    assert not any(mapped_from_file([p for name, p in ours.items() if name not in head]))
    first = dict(tiny_model("llama", 1).named_parameters())
    for name in head:  # skipped: still source 0's weights
        assert torch.equal(ours[name], first[name]), name
    assert not torch.equal(ours["model.embed_tokens.weight"], first["model.embed_tokens.weight"])


@pytest.mark.parametrize("genome", [[0, 1], [0, 0, 0, 0, 7], [0.5, 0, 0, 0, 0]])
def test_invalid_choice_genome_scores_worst_instead_of_crashing(genome):
    ga = _ga([tiny_model("llama", 1), tiny_model("llama", 2)])
    assert ga.toolbox.evaluate(genome) == (float("-inf"), float("inf"))
