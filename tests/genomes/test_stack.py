"""Layer stacking: models of another depth save, reload and generate (with and without the KV cache)."""

import random

import pytest
import torch
from conftest import tiny_benchmark, tiny_model
from transformers import AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM

from deap_llmmerge import LLMMergeGA
from deap_llmmerge.genomes.stack import cxStackOnePoint, mutStack


def gemma2(seed: int) -> Gemma2ForCausalLM:
    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                          sliding_window=4, query_pre_attn_scalar=8)
    torch.manual_seed(seed)
    return Gemma2ForCausalLM(config).eval()


def smollm3(seed: int):
    """SmolLM3 leaves out rotary embeddings in every fourth layer (``no_rope_layers``, one entry per layer)."""
    try:
        from transformers import SmolLM3Config, SmolLM3ForCausalLM
    except ImportError:
        pytest.skip("this transformers has no SmolLM3 (added in 4.54)")
    config = SmolLM3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return SmolLM3ForCausalLM(config).eval()


def pair(arch):
    if arch == "gemma2":
        return [gemma2(1), gemma2(2)]
    if arch == "smollm3":
        return [smollm3(1), smollm3(2)]
    return [tiny_model(arch, 1), tiny_model(arch, 2)]


def picks(layers, *pairs):
    return [source * layers + layer for source, layer in pairs]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2", "smollm3"])
@pytest.mark.parametrize("shape", ["deeper", "shallower"])
def test_a_stacked_model_saves_reloads_and_generates_with_and_without_the_cache(arch, shape, tmp_path):
    sources = pair(arch)
    layers = sources[0].config.num_hidden_layers
    ga = LLMMergeGA(sources, tiny_benchmark(), population_size=2, max_generations=0, genome="stack",
                    depth=(1, 2 * layers))
    chosen = [(0, 0), (1, 1), (1, 1), (0, 2), (1, layers - 1)] if shape == "deeper" else [(1, 0), (0, layers - 1)]
    genome = [1, 0, *picks(layers, *chosen)]
    merged = ga.merge_layers(genome)
    merged.save_pretrained(tmp_path / "stacked")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "stacked").eval()
    assert reloaded.config.num_hidden_layers == len(chosen)
    if arch == "gemma2":
        types = sources[0].config.layer_types
        assert reloaded.config.layer_types == [types[layer] for _, layer in chosen]
    if arch == "smollm3":
        rope = sources[0].config.no_rope_layers
        assert 0 in rope and reloaded.config.no_rope_layers == [rope[layer] for _, layer in chosen]
    ids = tiny_benchmark()["input_ids"][:2]
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, merged(input_ids=ids).logits)
        cached = reloaded.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
        uncached = reloaded.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached) and cached.shape[1] == ids.shape[1] + 8


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_the_stack_of_a_sources_own_layers_is_that_source(arch):
    sources = pair(arch)
    ga = LLMMergeGA(sources, tiny_benchmark(), population_size=2, max_generations=0, genome="stack")
    layers = sources[1].config.num_hidden_layers
    ids = tiny_benchmark()["input_ids"]
    with torch.no_grad():
        model = ga.merge_layers([1, 1, *picks(layers, *[(1, j) for j in range(layers)])])
        assert torch.equal(model(input_ids=ids).logits, sources[1](input_ids=ids).logits)


def test_an_output_layer_computes_as_the_source_layer_it_copies():
    """Layer 1 of a Gemma 2 source is a full-attention layer; at output position 0 it stays one."""
    sources = pair("gemma2")
    ga = LLMMergeGA(sources, tiny_benchmark(), population_size=2, max_generations=0, genome="stack",
                    depth=(1, 8))
    model = ga.merge_layers([0, 0, *picks(4, (0, 1), (0, 0), (0, 3), (0, 2))])
    assert model.config.layer_types == ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]
    assert model.model.layers[0].self_attn.sliding_window is None
    assert model.model.layers[1].self_attn.sliding_window == 4


@pytest.mark.parametrize("seed", range(20))
def test_operators_keep_children_within_the_depth_bounds_and_never_empty(seed):
    random.seed(seed)
    low, high, layers, n = 2, 7, 4, 3
    population = []
    for _ in range(8):
        depth = random.randint(low, high)
        population.append([random.randrange(n), random.randrange(n),
                           *(random.randrange(n * layers) for _ in range(depth))])
    for _ in range(30):
        a, b = random.sample(range(len(population)), 2)
        cxStackOnePoint(population[a], population[b], low, high)
        for ind in population:
            mutStack(ind, n, layers, low, high, pick_rate=0.3, duplicate_rate=0.3, delete_rate=0.3, swap_rate=0.3)
        for ind in population:
            assert low <= len(ind) - 2 <= high, ind
            assert all(0 <= gene < n * layers for gene in ind[2:]) and all(0 <= gene < n for gene in ind[:2])


def test_a_stack_search_runs_to_the_end_and_finds_depths_in_bounds():
    sources = pair("llama")
    ga = LLMMergeGA(sources, tiny_benchmark(), population_size=8, max_generations=3, genome="stack", depth=(2, 5),
                    mutation_rate=0.3, seed=0)
    best = ga.run()
    assert 2 <= len(best) - 2 <= 5
    depths = {len(ind) - 2 for ind in ga.population}
    assert depths <= set(range(2, 6)) and len(depths) > 1


def sliding(arch: str, seed: int):
    """Four layers, the last two with sliding-window attention (``max_window_layers: 2``)."""
    import transformers

    names = {"qwen2": "Qwen2", "qwen3": "Qwen3", "smollm3": "SmolLM3"}[arch]
    config_class, model_class = (getattr(transformers, f"{names}{suffix}", None) for suffix in ("Config",
                                                                                                 "ForCausalLM"))
    if config_class is None:
        pytest.skip(f"this transformers has no {names}")
    config = config_class(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                          use_sliding_window=True, max_window_layers=2, sliding_window=3, layer_types=None,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config.layer_types = ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    torch.manual_seed(seed)
    return model_class(config).eval()


def by_hand(sources, embed: int, head: int, chosen: list[tuple[int, int]]):
    """The stacked model built without the engine: a fresh model of that depth and those layer types, with
    the sources' weights copied in."""
    reference = sources[0]
    config = reference.config.__class__.from_dict(reference.config.to_dict())
    config.num_hidden_layers = len(chosen)
    config.layer_types = [reference.config.layer_types[layer] for _, layer in chosen]
    if hasattr(config, "no_rope_layers"):
        config.no_rope_layers = [reference.config.no_rope_layers[layer] for _, layer in chosen]
    model = type(reference)(config).eval()
    state = {}
    for name in model.state_dict():
        if name.startswith("model.layers."):
            index, rest = name[len("model.layers."):].split(".", 1)
            source, layer = chosen[int(index)]
            state[name] = sources[source].state_dict()[f"model.layers.{layer}.{rest}"]
        else:
            tied = name == "lm_head.weight" and reference.config.tie_word_embeddings  # travels with embed
            state[name] = sources[embed if "embed_tokens" in name or tied else head].state_dict()[name]
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "smollm3"])
def test_a_stack_of_sliding_window_layers_scores_as_built_by_hand_and_reloads(arch, tmp_path):
    sources = [sliding(arch, 1), sliding(arch, 2)]
    data = tiny_benchmark(length=12)
    ga = LLMMergeGA(sources, data, population_size=2, max_generations=0, genome="stack", depth=(1, 6))
    genome = [1, 0, *picks(4, (0, 3), (0, 2))]  # two sliding layers: the depth-2 skeleton has no full one
    expected = by_hand(sources, 1, 0, [(0, 3), (0, 2)])
    assert ga.toolbox.evaluate(genome) == pytest.approx(ga.evaluate(expected), rel=1e-6)
    merged = ga.merge_layers(genome)
    merged.save_pretrained(tmp_path / "stacked")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "stacked").eval()
    assert reloaded.config.layer_types == ["sliding_attention", "sliding_attention"]
    ids = data["input_ids"][:2]
    with torch.no_grad():
        logits = expected(input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, logits, atol=1e-6)
        assert torch.allclose(reloaded(input_ids=ids).logits, logits, atol=1e-6)
        cached = reloaded.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = reloaded.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_a_pool_shared_by_two_toolboxes_is_not_changed_by_the_first(tmp_path):
    from deap_llmmerge import SourcePool, make_toolbox

    paths = []
    for seed in (1, 2):
        sliding("qwen2", seed).save_pretrained(tmp_path / f"m{seed}")
        paths.append(tmp_path / f"m{seed}")
    data = tiny_benchmark(length=12)
    alone = make_toolbox(SourcePool(paths), data, genome="choice").evaluate([0] * 6)
    pool = SourcePool(paths)
    stacks = make_toolbox(pool, data, genome="stack")
    stacks.evaluate([1, 0, *picks(4, (0, 3), (0, 2), (1, 1), (0, 0))])  # layers moved in the first skeleton
    assert make_toolbox(pool, data, genome="choice").evaluate([0] * 6) == alone
