"""A pure genome of source k is source k, for every source order, or the pair is refused naming the field."""

import logging

import pytest
import torch
from conftest import tiny_benchmark, tiny_model

from deap_llmmerge import IncompatibleModelsError, LLMMergeGA, SourcePool


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _pure_logits_match(sources):
    ga = LLMMergeGA(sources, tiny_benchmark(), population_size=2, max_generations=0)
    ids = tiny_benchmark()["input_ids"]
    for k, source in enumerate(sources):
        merged = ga.merge_layers(ga.toolbox.pure(source=k))
        assert torch.equal(_logits(merged, ids), _logits(source, ids)), k


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("order", [(1, 2), (2, 1)])
def test_pure_genome_of_every_source_is_that_source_in_both_orders(arch, order):
    _pure_logits_match([tiny_model(arch, seed) for seed in order])


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_pure_genomes_of_saved_sources_match_in_both_orders(arch, tmp_path):
    paths = []
    for seed in (1, 2):
        tiny_model(arch, seed).save_pretrained(tmp_path / f"m{seed}")
        paths.append(tmp_path / f"m{seed}")
    for order in (paths, paths[::-1]):
        ga = LLMMergeGA(order, tiny_benchmark(), population_size=2, max_generations=0)
        ids = tiny_benchmark()["input_ids"]
        for k, path in enumerate(order):
            reference = type(tiny_model(arch, 0)).from_pretrained(path).eval()
            merged = ga.merge_layers(ga.toolbox.pure(source=k))
            assert torch.equal(_logits(merged, ids), _logits(reference, ids))


DIFFERENCES = {
    "tied embeddings": ("llama", {"tie_word_embeddings": True}, "tie_word_embeddings"),
    "untied embeddings": ("qwen2", {"tie_word_embeddings": False}, "tie_word_embeddings"),
    "attention bias": ("llama", {"attention_bias": True}, "attention_bias"),
    "mlp bias": ("llama", {"mlp_bias": True}, "mlp_bias"),
    "norm epsilon": ("llama", {"rms_norm_eps": 0.5}, "rms_norm_eps"),
    "rope theta": ("llama", {"rope_parameters": {"rope_theta": 500.0, "rope_type": "default"}}, "rope_theta"),
    "gpt2 epsilon": ("gpt2", {"layer_norm_epsilon": 0.1}, "layer_norm_epsilon"),
    "activation": ("llama", {"hidden_act": "gelu"}, "hidden_act"),
}


@pytest.mark.parametrize("case", list(DIFFERENCES))
@pytest.mark.parametrize("changed_first", [False, True])
def test_function_changing_differences_are_refused_naming_the_field(case, changed_first):
    arch, overrides, field = DIFFERENCES[case]
    plain, changed = tiny_model(arch, 1), tiny_model(arch, 2, **overrides)
    sources = [changed, plain] if changed_first else [plain, changed]
    with pytest.raises(IncompatibleModelsError, match=rf"source 1 .* is incompatible with source 0 .*{field}"):
        SourcePool(sources)


def test_names_and_bookkeeping_do_not_make_models_incompatible():
    other = tiny_model("llama", 2, bos_token_id=5, eos_token_id=6, attention_dropout=0.3, initializer_range=0.5)
    other.config._name_or_path = "somewhere/else"
    _pure_logits_match([tiny_model("llama", 1), other])


def test_floats_equal_to_float32_precision_are_the_same_field():
    # a GGUF file stores rms_norm_eps = 1e-6 in float32: it reads back as 9.999999974752427e-07
    rounded = float(torch.tensor(1e-6, dtype=torch.float32))
    assert rounded != 1e-6
    _pure_logits_match([tiny_model("llama", 1), tiny_model("llama", 2, rms_norm_eps=rounded)])
    with pytest.raises(IncompatibleModelsError, match="'rms_norm_eps' is 1.1e-06 vs 1e-06"):
        SourcePool([tiny_model("llama", 1), tiny_model("llama", 2, rms_norm_eps=1.1e-6)])


def test_a_source_of_another_dtype_is_reported(caplog):
    half = tiny_model("llama", 2).to(torch.bfloat16)
    with caplog.at_level(logging.WARNING):
        SourcePool([tiny_model("llama", 1), half])
    assert "source 1 (" in caplog.text and "torch.bfloat16" in caplog.text and "written in torch.float32" in caplog.text
