"""Two small expert models that share one base, for the demo: trained on CPU in about a minute, cached.

The base learns to copy a string ("C" task) over letters and digits. From it, one expert is fine-tuned
to shift every letter by one ("R" task: abc -> bcd), the other to add one to every digit ("S" task:
129 -> 230). Each expert was fine-tuned on its own block of layers only (partial fine-tuning, as people
do to save memory): the letters expert on layers 0-2, the digits expert on layers 3-5. Each is good at
its own task and useless at the other; the benchmark mixes both tasks, so a merge that keeps both
skills beats every source. Which layers to take from whom is not obvious (the blocks interfere), and
that is what the genetic algorithm has to find out.

A character-level vocabulary keeps everything inside this file (no tokenizer download).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PAD = 0
VOCAB = ["<pad>", "<bos>", "=", "C", "R", "S", *"abcdefghij", *"0123456789"]
TOKEN = {token: i for i, token in enumerate(VOCAB)}
LETTERS, DIGITS = "abcdefghij", "0123456789"
WORD_LENGTH = 6

TASKS = {
    "copy": ("C", None),
    "shift": ("R", LETTERS),
    "increment": ("S", DIGITS),
}


def _answer(task: str, word: str) -> str:
    if task == "copy":
        return word
    alphabet = TASKS[task][1]
    return "".join(alphabet[(alphabet.index(c) + 1) % len(alphabet)] for c in word)


def make_examples(task: str, n: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences ``<bos> MARKER word = answer`` with labels on the answer only."""
    marker, alphabet = TASKS[task]
    rows, labels = [], []
    for _ in range(n):
        letters = alphabet or rng.choice((LETTERS, DIGITS))
        word = "".join(rng.choice(letters) for _ in range(WORD_LENGTH))
        tokens = ["<bos>", marker, *word, "=", *_answer(task, word)]
        ids = [TOKEN[t] for t in tokens]
        rows.append(ids)
        labels.append([-100] * (len(ids) - WORD_LENGTH) + ids[-WORD_LENGTH:])
    return torch.tensor(rows), torch.tensor(labels)


def mixed_benchmark(n_per_task: int, seed: int) -> dict[str, torch.Tensor]:
    """Half letter-shift, half digit-increment examples: the data the merge is scored on."""
    rng = random.Random(seed)
    parts = [make_examples(task, n_per_task, rng) for task in ("shift", "increment")]
    return {"input_ids": torch.cat([p[0] for p in parts]), "labels": torch.cat([p[1] for p in parts])}


def _config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
        bos_token_id=TOKEN["<bos>"], eos_token_id=None, pad_token_id=PAD, tie_word_embeddings=False,
    )


def _train(model: LlamaForCausalLM, task: str, steps: int, lr: float, seed: int,
           layers: range | None = None) -> None:
    """AdamW on ``task``; with ``layers``, only those decoder layers are trained."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    trainable = [param for name, param in model.named_parameters()
                 if layers is None or any(name.startswith(f"model.layers.{i}.") for i in layers)]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
    model.train()
    for _ in range(steps):
        input_ids, labels = make_examples(task, 64, rng)
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


def build_experts(folder: Path, base_steps: int = 1500, expert_steps: int = 300) -> dict[str, Path]:
    """Train (or reuse) ``base``, ``letters-expert`` and ``digits-expert`` under ``folder``."""
    paths = {name: folder / name for name in ("base", "letters-expert", "digits-expert")}
    if all((path / "config.json").exists() for path in paths.values()):
        return paths
    print(f"training a base that copies strings ({base_steps} steps), then two experts from it ({expert_steps} "
          f"steps each); cached in {folder}", flush=True)
    torch.manual_seed(0)
    base = LlamaForCausalLM(_config())
    _train(base, "copy", base_steps, 3e-3, seed=1)
    base.save_pretrained(paths["base"])
    experts = (("letters-expert", "shift", 2, range(0, 3)), ("digits-expert", "increment", 3, range(3, 6)))
    for name, task, seed, layers in experts:
        expert = LlamaForCausalLM.from_pretrained(paths["base"])
        print(f"  {name}: layers {layers.start}-{layers.stop - 1} learn to {task}", flush=True)
        _train(expert, task, expert_steps, 1e-3, seed, layers)
        expert.save_pretrained(paths[name])
    return paths
