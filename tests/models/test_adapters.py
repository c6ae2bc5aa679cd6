"""PEFT adapter folders as sources: merged into their base on load, exactly as peft's own merge_and_unload()."""

import json

import pytest
import torch
from conftest import cli, tiny_benchmark, tiny_model, tiny_tokenizer, write_run_config
from safetensors.torch import load_file

from deap_llmmerge import LLMMergeGA, SourceModelError
from deap_llmmerge.models.sources import SourcePool

peft = pytest.importorskip("peft", reason="PEFT sources need the optional extra peft (pip install peft)")

TARGETS = {"llama": ["q_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "c_fc"]}


def adapter(folder, arch, base_folder, seed=3, named=None):
    """A LoRA adapter of ``base_folder``'s model with nonzero weights (B is not left at 0), saved to ``folder``;
    returns peft's own merged model."""
    torch.manual_seed(seed)
    model = tiny_model(arch, 1)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[arch], init_lora_weights=False,
                             fan_in_fan_out=arch == "gpt2")
    wrapped = peft.get_peft_model(model, config)
    wrapped.peft_config["default"].base_model_name_or_path = named or str(base_folder)
    wrapped.save_pretrained(folder)
    return wrapped.merge_and_unload().eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_an_adapter_source_is_its_base_with_peft_merge_and_unload(tmp_path, arch):
    tiny_model(arch, 1).save_pretrained(tmp_path / "base")
    expected = adapter(tmp_path / "lora", arch, tmp_path / "base")
    pool = SourcePool([tmp_path / "base", tmp_path / "lora"])
    merged = pool.sources[1].model
    ids = tiny_benchmark()["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, expected(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(merged(input_ids=ids).logits, tiny_model(arch, 1)(input_ids=ids).logits, atol=1e-3)
    ga = LLMMergeGA([tmp_path / "base", tmp_path / "lora"], tiny_benchmark(), population_size=4, max_generations=0)
    with torch.no_grad():
        pure = ga.merge_layers(ga.toolbox.pure(source=1))(input_ids=ids).logits
    assert torch.allclose(pure, expected(input_ids=ids).logits, atol=1e-5)


def test_an_adapter_of_a_hub_model_takes_the_runs_base(tmp_path):
    tiny_model("llama", 1).save_pretrained(tmp_path / "base")
    tiny_model("llama", 2).save_pretrained(tmp_path / "other")
    adapter(tmp_path / "lora", "llama", tmp_path / "base", named="HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(SourceModelError, match="is a PEFT adapter of 'HuggingFaceTB/SmolLM2-135M-Instruct', which "
                                               "is not a local model folder: name the base model's folder with base:"):
        SourcePool([tmp_path / "other", tmp_path / "lora"])
    pool = SourcePool([tmp_path / "other", tmp_path / "lora"], base=tmp_path / "base")
    assert pool.num_sources == 2 and pool.base_index == 2


def test_a_bad_adapter_is_one_line_naming_it(tmp_path):
    tiny_model("llama", 1).save_pretrained(tmp_path / "base")
    adapter(tmp_path / "lora", "llama", tmp_path / "base")
    weights = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    from safetensors.torch import save_file

    save_file({name: torch.zeros(t.shape[0] + 1, *t.shape[1:]) for name, t in weights.items()},
              tmp_path / "lora" / "adapter_model.safetensors")
    with pytest.raises(SourceModelError, match=f"cannot merge PEFT adapter {tmp_path / 'lora'} into "
                                               f"{tmp_path / 'base'}: ") as caught:
        SourcePool([tmp_path / "base", tmp_path / "lora"])
    assert "\n" not in str(caught.value)
    (tmp_path / "lora" / "adapter_config.json").write_text("{not json")
    with pytest.raises(SourceModelError, match="adapter_config.json is not valid"):
        SourcePool([tmp_path / "base", tmp_path / "lora"])


@pytest.mark.slow  # starts processes
def test_a_run_over_an_adapter_and_its_export_build_the_same_model(tmp_path):
    """The adapter first: its folder has no tokenizer, so the text benchmark is built with the base's."""
    tiny_model("llama", 1).save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    tiny_model("llama", 2).save_pretrained(tmp_path / "chat")
    adapter(tmp_path / "lora", "llama", tmp_path / "base")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"context": f"{i} + 1 =", "choices": ["a", "bc"],
                                                           "answer": i % 2}) + "\n" for i in range(6)))
    config = write_run_config(tmp_path, [tmp_path / "lora", tmp_path / "chat"], genome="methods", method="ties",
                              base=str(tmp_path / "base"), ga={"population_size": 4, "max_generations": 1},
                              benchmark={"qa": {"path": "qa.jsonl", "kind": "multiple_choice"}})
    done = cli("run", config, "--output", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "recipe.json").read_text())["sources"][0]["path"] == str(tmp_path / "lora")
    assert (tmp_path / "out" / "best" / "tokenizer.json").is_file()
    again = cli("export", tmp_path / "out", "--output", tmp_path / "exported")
    assert again.returncode == 0, again.stderr
    saved, exported = (load_file(tmp_path / name / "model.safetensors") for name in ("out/best", "exported"))
    assert saved.keys() == exported.keys() and all(torch.equal(saved[k], exported[k]) for k in saved)
