import pytest
import torch
from conftest import tiny_benchmark, tiny_model

from deap_llmmerge import IncompatibleModelsError, SourcePool
from deap_llmmerge.errors import SourceModelError
from deap_llmmerge.models.sources import split_parts


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
    with pytest.raises(IncompatibleModelsError, match=r"source 1 \(model_1\) is a gpt2 model, source 0 \(model_0\) "
                                                      r"a llama \(gpt2 vs llama\): merged sources share one"):
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


@pytest.mark.parametrize("what, message", [
    ("adapter", r"adapter is a PEFT adapter (whose adapter_config.json names no base model: name the base model's "
                r"folder with base:|\(adapter_config.json, no config.json\): merge it into its base model)"),
    ("empty folder", r"empty folder has no config.json: not a Hugging Face model folder"),
    ("weights file", r"model.safetensors is a file: name its folder \(with config.json\) or a .gguf file"),
])
@pytest.mark.parametrize("where", ["first source", "second source", "base model"])
def test_a_path_that_is_not_a_model_folder_says_what_it_is(saved_llamas, tmp_path, what, message, where):
    import shutil

    if what == "adapter":  # what a LoRA fine-tune is saved as
        path = tmp_path / "adapter"
        path.mkdir()
        (path / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
        shutil.copy(saved_llamas[0] / "model.safetensors", path / "adapter_model.safetensors")
    elif what == "empty folder":
        path = tmp_path / "empty folder"
        path.mkdir()
    else:
        path = saved_llamas[0] / "model.safetensors"
    sources, base = {"first source": ([path, saved_llamas[1]], None), "second source": ([saved_llamas[0], path], None),
                     "base model": (saved_llamas, path)}[where]
    with pytest.raises(SourceModelError, match=message):
        SourcePool(sources, base=base)


def test_truncated_safetensors_is_a_clear_error(saved_llamas, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved_llamas[1], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(SourceModelError, match="truncated"):
        SourcePool([saved_llamas[0], broken])


def _save_as_pytorch_bin(model, folder, shards: int = 1):
    """``model`` as an older checkpoint: config.json and ``pytorch_model.bin`` (or ``shards`` shards and
    their index), no safetensors."""
    import json

    model.config.save_pretrained(folder)
    state = {name: t.clone() for name, t in model.state_dict().items()}
    names = sorted(state)
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return
    weight_map = {}
    for k in range(shards):
        file = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
        torch.save({name: state[name] for name in names[k::shards]}, folder / file)
        weight_map.update({name: file for name in names[k::shards]})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("layout", ["pytorch_model.bin", "sharded pytorch_model.bin", "sharded safetensors"])
def test_older_and_sharded_checkpoints_merge_like_one_safetensors_file(layout, tmp_path):
    from deap_llmmerge import LLMMergeGA
    from deap_llmmerge.models.loading import sha256_of, weight_files

    sources = [tiny_model("llama", 1), tiny_model("llama", 2)]
    paths = [tmp_path / "a", tmp_path / "b"]
    sources[0].save_pretrained(paths[0])
    if layout == "sharded safetensors":
        sources[1].save_pretrained(paths[1], max_shard_size="20KB")
        assert len(list(paths[1].glob("*.safetensors"))) > 1
    else:
        _save_as_pytorch_bin(sources[1], paths[1], shards=1 if layout == "pytorch_model.bin" else 3)
    ids = torch.randint(0, 64, (3, 8))
    ga = LLMMergeGA(paths, (ids, ids), population_size=2, max_generations=0, genome="blend")
    for name, param in sources[1].named_parameters():
        assert torch.equal(ga.pool.tensors[1][name], param.detach()), name
    parts = len(ga.pool.part_names)
    with torch.no_grad():
        pure = ga.merge_layers([0.0, 1.0] * parts)(input_ids=ids).logits
        assert torch.equal(pure, sources[1](input_ids=ids).logits)
        half = ga.merge_layers([0.5, 0.5] * parts)(input_ids=ids).logits
        reference = LLMMergeGA(sources, (ids, ids), population_size=2, max_generations=0, genome="blend")
        assert torch.equal(half, reference.merge_layers([0.5, 0.5] * parts)(input_ids=ids).logits)
    before = sha256_of(paths[1])
    with open(weight_files(paths[1])[-1], "ab") as handle:
        handle.write(b"\0")
    assert sha256_of(paths[1]) != before  # the weights are hashed (recipe.json's sources)


class _Pickled:
    """Not a tensor: loading a checkpoint that holds one would run pickled code."""


@pytest.mark.parametrize("content, message", [
    (b"not a pickle at all", r"pytorch_model.bin: cannot read PyTorch weights: "),
    ("code", r"pytorch_model.bin: cannot read PyTorch weights: .*[Ww]eights only load failed"),
    ("not tensors", r"pytorch_model.bin: not a PyTorch state dict"),
])
def test_bad_pytorch_bin_is_a_one_line_error_naming_the_file(saved_llamas, tmp_path, content, message):
    broken = tmp_path / "broken"
    tiny_model("llama", 2).config.save_pretrained(broken)
    weights = broken / "pytorch_model.bin"
    if content == "code":  # a pickled object of a class: weights-only loading refuses to run it
        torch.save({"model.embed_tokens.weight": _Pickled()}, weights)
    elif content == "not tensors":
        torch.save({"model.embed_tokens.weight": 3}, weights)
    else:
        weights.write_bytes(content)
    with pytest.raises(SourceModelError, match=message) as raised:
        SourcePool([saved_llamas[0], broken])
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma", "phi3"])
def test_pure_genome_reproduces_other_layouts(arch):
    from deap_llmmerge import LLMMergeGA

    sources = [tiny_model(arch, 1), tiny_model(arch, 2)]
    ids = torch.randint(0, 64, (3, 8))
    ga = LLMMergeGA(sources, (ids, ids), population_size=2, max_generations=0)
    merged = ga.merge_layers([1] * len(ga.pool.part_names))
    with torch.no_grad():
        assert torch.equal(merged(input_ids=ids).logits, sources[1](input_ids=ids).logits)


def test_library_use_prints_no_loading_bars(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    from deap_llmmerge import LLMMergeGA

    for seed in (1, 2):
        tiny_model("llama", seed).save_pretrained(tmp_path / f"m{seed}")
    hf_logging.enable_progress_bar()  # as in a user's fresh process (the CLI, run in-process by tests, turns it off)
    capsys.readouterr()
    ga = LLMMergeGA([tmp_path / "m1", tmp_path / "m2"], tiny_benchmark(), population_size=4, max_generations=1,
                    genome="blend")
    ga.run()
    assert "Loading weights" not in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # the user's own transformers calls keep their bars
