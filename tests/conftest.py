"""Tiny random models built in code (no network): the architectures the engine must handle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from deap_llmmerge import GENOMES, MERGE_METHODS  # noqa: E402

torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
HELPERS = TESTS / "helpers"

VOCAB = 64


def _llama_like(config_class, **extra):
    return config_class(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **extra)


CONFIGS = {
    "llama": lambda: (LlamaForCausalLM, _llama_like(LlamaConfig)),
    "qwen2": lambda: (Qwen2ForCausalLM, _llama_like(Qwen2Config, tie_word_embeddings=True)),
    "mistral": lambda: (MistralForCausalLM, _llama_like(MistralConfig)),
    "gpt2": lambda: (GPT2LMHeadModel, GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64,
                                                 bos_token_id=0, eos_token_id=0)),
}
EXTRA_CONFIGS = {
    "gpt_neox": lambda: (GPTNeoXForCausalLM, GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                                            num_hidden_layers=3, num_attention_heads=4,
                                                            max_position_embeddings=64)),
    "gemma": lambda: (GemmaForCausalLM, _llama_like(GemmaConfig, head_dim=8)),
    "phi3": lambda: (Phi3ForCausalLM, _llama_like(Phi3Config, pad_token_id=0)),
}
ARCHITECTURES = list(CONFIGS)

# The settings a registered genome family needs beyond its name, one case per variant (a family not named
# here needs none): the families' contract tests run over FAMILY_CASES, so a family is covered the day it
# is registered.
FAMILY_VARIANTS = {"methods": {"ties": {"method": "ties"}, "search": {"method": "search"}}}
FAMILY_CASES = {f"{name}-{variant}" if variant else name: {"genome": name, **settings}
                for name in GENOMES for variant, settings in FAMILY_VARIANTS.get(name, {"": {}}).items()}


@pytest.fixture(params=list(FAMILY_CASES))
def family_case(request) -> dict:
    """Every registered genome family (and variant), as the keyword settings that make it."""
    return FAMILY_CASES[request.param]


@pytest.fixture(params=[name for name in MERGE_METHODS if name != "take"])
def merge_method(request) -> str:
    """Every registered merge method but ``take``."""
    return request.param


def tiny_model(arch: str, seed: int, **overrides) -> torch.nn.Module:
    model_class, config = {**CONFIGS, **EXTRA_CONFIGS}[arch]()
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return model_class(config).eval()


def tiny_benchmark(n: int = 12, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (n, length), generator=generator)
    labels = input_ids.clone()
    labels[:, : length // 2] = -100
    return {"input_ids": input_ids, "labels": labels}


CHARACTERS = "abcdefghijklmnopqrstuvwxyz .,?:!'\n0123456789-ABCDEFGHIJKLMNOP"


def tiny_tokenizer():
    """A character-level tokenizer of 64 ids (3 special + 61 characters), built in code, no download."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "<bos>": 2}
    vocab.update({c: i + 3 for i, c in enumerate(CHARACTERS)})
    assert len(vocab) == VOCAB
    model = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>")


SLOW = ("run", "distributed", "experiments")  # the folders whose tests start processes (CLI, SCOOP, pools)


def pytest_collection_modifyitems(items):
    """``-m "not slow"`` (``make test-fast``) leaves out the tests that start processes: the rest is the core."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(TESTS).parts
        if parts[0] in SLOW or "scoop" in item.name or "pool" in item.name or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


@pytest.fixture
def pair(arch):
    return tiny_model(arch, 1), tiny_model(arch, 2)


@pytest.fixture(scope="session")
def saved_llamas(tmp_path_factory):
    """Two tiny Llamas saved as HF folders (safetensors)."""
    folder = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (1, 2):
        path = folder / f"llama-{seed}"
        tiny_model("llama", seed).save_pretrained(path)
        paths.append(path)
    return paths


def imitation(teacher, seed: int = 0, n: int = 16, length: int = 10) -> dict[str, torch.Tensor]:
    """Random sequences labelled with ``teacher``'s own greedy predictions: ``teacher`` is right everywhere
    (the best candidate of a run scored on them)."""
    ids = torch.randint(0, 64, (n, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        predicted = teacher(input_ids=ids).logits.argmax(-1)
    labels = torch.full_like(ids, -100)
    labels[:, 1:] = predicted[:, :-1]
    return {"input_ids": ids, "labels": labels}


def write_run_config(folder, models, name: str = "config.yaml", **settings):
    """In ``folder``: the tiny benchmark as bench.pt (once) and a run config over ``models`` scored on it,
    with ``settings`` (``genome``, ``ga``, ...) as further keys; returns the config's path."""
    if not (folder / "bench.pt").exists():
        torch.save(tiny_benchmark(), folder / "bench.pt")
    path = folder / name
    path.write_text(yaml.safe_dump({"models": [str(p) for p in models], "benchmark": "bench.pt", **settings}))
    return path


def cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """``deap-llmmerge --quiet ARGS`` in a fresh process, as a user runs it (one torch thread; ``env`` added
    to the environment)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "deap_llmmerge", "--quiet", *map(str, args)],
                          capture_output=True, text=True, env=env)


class FailOnce:
    """A loss metric that raises on its n-th call: one candidate's scoring fails."""

    def __init__(self, n):
        self.calls, self.n = 0, n

    def __call__(self, logits, labels):
        from deap_llmmerge import calculate_loss

        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("CUDA out of memory (simulated)")
        return calculate_loss(logits, labels)
