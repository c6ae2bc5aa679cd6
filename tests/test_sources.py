import pytest
import torch
from conftest import tiny_model

from deap_llmmerge import IncompatibleModelsError, SourcePool
from deap_llmmerge.errors import SourceModelError
from deap_llmmerge.sources import split_parts


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt2", "gpt_neox", "gemma", "phi3"])
def test_parts_cover_every_parameter_once_in_network_order(arch):
    model = tiny_model(arch, 0)
    parts = split_parts(model)
    assert list(parts) == ["embed", "layers.0", "layers.1", "layers.2", "head"]
    names = [name for members in parts.values() for name, _ in members]
    assert sorted(names) == sorted(name for name, _ in model.named_parameters())


def test_tied_output_projection_travels_with_the_embeddings():
    model = tiny_model("qwen2", 0)
    parts = split_parts(model)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert [name for name, _ in parts["head"]] == ["model.norm.weight"]


def test_layer_parameters_are_named_inside_their_layer():
    parts = split_parts(tiny_model("llama", 0))
    assert ("model.layers.1.self_attn.q_proj.weight", "self_attn.q_proj.weight") in parts["layers.1"]


def test_a_different_width_names_the_config_field():
    small, wide = tiny_model("llama", 0), tiny_model("llama", 1, intermediate_size=48)
    with pytest.raises(IncompatibleModelsError, match=r"config field 'intermediate_size' is 48 vs 64"):
        SourcePool([small, wide])


def test_incompatible_shapes_name_the_parameter_and_both_shapes():
    small, wide = tiny_model("llama", 0), tiny_model("llama", 1, intermediate_size=48)
    wide.config.intermediate_size = 64  # a config that does not describe its weights
    with pytest.raises(IncompatibleModelsError,
                       match=r"layers.0: parameter 'mlp.gate_proj.weight' has shape \(64, 32\) vs \(48, 32\)"):
        SourcePool([small, wide])


def test_different_layer_counts_are_incompatible():
    with pytest.raises(IncompatibleModelsError, match="has 2 decoder layers .* source 0 .* has 3"):
        SourcePool([tiny_model("llama", 0), tiny_model("llama", 1, num_hidden_layers=2)])


def test_different_architectures_are_incompatible():
    with pytest.raises(IncompatibleModelsError, match="incompatible|decoder layers"):
        SourcePool([tiny_model("llama", 0), tiny_model("gpt2", 1)])


def test_custom_compatibility_hook_can_refuse():
    with pytest.raises(IncompatibleModelsError, match="rejected by is_compatible"):
        SourcePool([tiny_model("llama", 0), tiny_model("llama", 1)], compatible=lambda a, b: False)


def test_folders_are_memory_mapped_with_the_saved_values(saved_llamas):
    pool = SourcePool(saved_llamas)
    reference = tiny_model("llama", 2)
    for name, param in reference.named_parameters():
        assert torch.equal(pool.tensors[1][name], param.detach())


def test_one_source_is_not_enough():
    with pytest.raises(SourceModelError, match="at least 2 source models"):
        SourcePool([tiny_model("llama", 0)])


def test_missing_path_is_named(tmp_path):
    with pytest.raises(SourceModelError, match="not found: .*nowhere"):
        SourcePool([tmp_path / "nowhere", tmp_path / "nowhere"])


def test_truncated_safetensors_is_a_clear_error(saved_llamas, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved_llamas[1], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(SourceModelError, match="truncated"):
        SourcePool([saved_llamas[0], broken])


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma", "phi3"])
def test_pure_genome_reproduces_other_layouts(arch):
    from deap_llmmerge import LLMMergeGA

    sources = [tiny_model(arch, 1), tiny_model(arch, 2)]
    ids = torch.randint(0, 64, (3, 8))
    ga = LLMMergeGA(sources, (ids, ids), population_size=2, max_generations=0)
    merged = ga.merge_layers([1] * len(ga.pool.part_names))
    with torch.no_grad():
        assert torch.equal(merged(input_ids=ids).logits, sources[1](input_ids=ids).logits)
