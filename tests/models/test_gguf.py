"""GGUF sources: a tiny Llama written as a GGUF file (float32 tensors, llama.cpp's layout) is a source like
a folder: identical logits, a run over it with an HF folder, a checkpoint saved from it."""

import json

import pytest
import torch
from conftest import cli, tiny_model, write_run_config

gguf = pytest.importorskip("gguf", reason="the gguf extra is not installed (pip install -e '.[gguf]')")


def _llama_cpp_order(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's convert script reorders the rows of q and k per head (rotary halves interleaved);
    transformers undoes it when it reads a GGUF file."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_gguf(model, path) -> None:
    """``model`` (a Llama) as a GGUF file with float32 tensors and a placeholder vocabulary."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(config.vocab_size)])
    writer.add_token_scores([0.0] * config.vocab_size)
    writer.add_token_types([1] * config.vocab_size)
    top = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}
    inside = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().float()
        if name in top:
            writer.add_tensor(f"{top[name]}.weight", tensor.numpy())
            continue
        _, _, layer, *module, _ = name.split(".")  # model.layers.I.<module>.weight
        module = ".".join(module)
        if module == "self_attn.q_proj":
            tensor = _llama_cpp_order(tensor, config.num_attention_heads)
        elif module == "self_attn.k_proj":
            tensor = _llama_cpp_order(tensor, config.num_key_value_heads)
        writer.add_tensor(f"blk.{layer}.{inside[module]}.weight", tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_source_merges_like_the_model_it_holds(tmp_path):
    from deap_llmmerge import LLMMergeGA

    sources = [tiny_model("llama", 1), tiny_model("llama", 2)]
    write_gguf(sources[0], tmp_path / "a.gguf")
    sources[1].save_pretrained(tmp_path / "b")
    ids = torch.randint(0, 64, (3, 8))
    ga = LLMMergeGA([tmp_path / "a.gguf", tmp_path / "b"], (ids, ids), population_size=2, max_generations=0)
    parts = len(ga.pool.part_names)
    with torch.no_grad():
        for k in (0, 1, 0):  # source 0's weights are the loaded model's: no merge may be written into them
            assert torch.equal(ga.merge_layers([k] * parts)(input_ids=ids).logits, sources[k](input_ids=ids).logits)


@pytest.mark.slow  # starts processes
def test_a_run_over_a_gguf_file_and_a_folder_saves_a_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    sources = [tiny_model("llama", 1), tiny_model("llama", 2)]
    write_gguf(sources[0], tmp_path / "a.gguf")
    sources[1].save_pretrained(tmp_path / "b")
    config = write_run_config(tmp_path, [tmp_path / "a.gguf", tmp_path / "b"], genome="blend",
                              ga={"population_size": 4, "max_generations": 1})
    result = cli("run", config, "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert recipe["sources"][0]["path"].endswith("a.gguf") and len(recipe["sources"][0]["sha256"]) == 64
    best = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "best")
    assert "quantization_config" not in json.loads((tmp_path / "out" / "best" / "config.json").read_text())
    assert best.dtype == torch.float32
    assert "GGUF" in (tmp_path / "out" / "mergekit.yaml").read_text()  # mergekit needs it converted first
