"""What a mergekit user expects of a finished run: a model card naming every source, the saved dtype they
ask for, and a plain word when the best candidate is no merge at all."""

import json

import pytest
import torch
import yaml
from conftest import cli, imitation, tiny_model, write_run_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, saved_llamas):
    folder = tmp_path_factory.mktemp("card")
    torch.save(imitation(tiny_model("llama", 1)), folder / "teacher.pt")
    config = write_run_config(folder, saved_llamas, genome="blend", benchmark="teacher.pt", output_dtype="bfloat16",
                              ga={"population_size": 4, "max_generations": 1})
    result = cli("run", config, "--output", folder / "out")
    assert result.returncode == 0, result.stderr
    return folder


def test_the_best_merge_has_a_model_card_naming_every_source(finished, saved_llamas):
    text = (finished / "out" / "best" / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "transformers" and "merge" in front["tags"]
    assert front["base_model"] == [str(path) for path in saved_llamas]
    assert "merge_method:" in text and "## Recipe, part by part" in text and "fitness" in text
    try:
        from huggingface_hub import ModelCard
    except ImportError:
        return
    card = ModelCard.load(finished / "out" / "best" / "README.md")
    assert card.data.base_model == [str(path) for path in saved_llamas]


def test_the_saved_model_has_the_dtype_asked_for_and_export_too(finished):
    from transformers import AutoModelForCausalLM

    assert json.loads((finished / "out" / "best" / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForCausalLM.from_pretrained(finished / "out" / "best").dtype == torch.bfloat16
    assert cli("export", finished / "out", "--output", finished / "exported").returncode == 0
    assert AutoModelForCausalLM.from_pretrained(finished / "exported").dtype == torch.bfloat16
    assert (finished / "exported" / "README.md").read_text().startswith("---\n")


def test_a_run_whose_best_is_a_source_says_so(finished):
    recipe = json.loads((finished / "out" / "recipe.json").read_text())
    assert recipe["best_is"] == "source 0 (llama-1)"
    again = cli("run", finished / "config.yaml", "--output", finished / "again")
    assert again.returncode == 0
    assert "the best candidate is source 0 (llama-1) itself: no merge the search tried beat it" in again.stderr
