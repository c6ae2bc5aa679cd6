"""Two experts fine-tuned from one base (SmolLM2-135M-Instruct), every decoder layer trained, cached.

- ``shakespeare``: next-token loss on windows of the plays other than the fitness and held-out plays;
- ``qa``: the answer's tokens of the QA tasks' training items (context + correct choice), as
  lm-evaluation-harness scores them.

The embedding matrix (tied to the output head) stays frozen: it is a fifth of the parameters and most of
an optimizer step's cost here, and it keeps both experts on the base's vocabulary geometry.

``--gentle``: the full run's steps at a quarter of its learning rate, so each expert moves less far from the
base (smaller task vectors, which add up more nearly linearly when merged); cached apart from the full ones.

    .venv/bin/python experiments/smollm2_experts.py [--quick | --gentle]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smollm2_data import CACHE, FITNESS_PLAY, HELD_OUT_PLAY, base_model, download, plays, splits  # noqa: E402

SETTINGS = {  # steps, batch, tokens, learning rate
    "full": {"shakespeare": (120, 8, 128, 1e-4), "qa": (150, 16, None, 5e-5)},
    "gentle": {"shakespeare": (120, 8, 128, 2.5e-5), "qa": (150, 16, None, 1.25e-5)},
    "quick": {"shakespeare": (8, 4, 64, 2e-4), "qa": (8, 8, None, 1e-4)},
}


def _train(base: Path, out: Path, batches: Iterator[dict[str, torch.Tensor]], steps: int, lr: float,
           label: str) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    model.get_input_embeddings().weight.requires_grad = False
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10))
    model.train()
    started = time.time()
    for step in range(steps):
        loss = model(**next(batches)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"  {label} step {step}/{steps}: loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    partial = out.with_name(out.name + ".partial")
    model.eval().save_pretrained(partial)
    AutoTokenizer.from_pretrained(base).save_pretrained(partial)
    partial.rename(out)
    return out


def _text_batches(ids: torch.Tensor, batch: int, tokens: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(ids) - tokens - 1, (batch,), generator=generator)
        windows = torch.stack([ids[s:s + tokens] for s in starts])
        yield {"input_ids": windows, "labels": windows}


def _answer_batches(tokenizer, items: list[dict], batch: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    from deap_llmmerge.scoring.benchmark_files import continuation_ids

    rows = []
    for item in items:
        context, answer = continuation_ids(tokenizer, item["context"], item["choices"][item["answer"]])
        rows.append((context + answer, len(answer)))
    rng = random.Random(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    while True:
        chosen = rng.sample(rows, batch)
        length = max(len(ids) for ids, _ in chosen)
        input_ids = torch.full((batch, length), pad)
        labels = torch.full((batch, length), -100)
        mask = torch.zeros((batch, length), dtype=torch.long)
        for i, (ids, n) in enumerate(chosen):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            labels[i, len(ids) - n:len(ids)] = torch.tensor(ids[len(ids) - n:])
            mask[i, :len(ids)] = 1
        yield {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def shakespeare_expert(base: Path, texts: dict[str, str], setting: str) -> Path:
    """The Shakespeare expert of ``setting`` (a key of SETTINGS), trained once and cached."""
    from transformers import AutoTokenizer

    out = CACHE / "experts" / setting / "shakespeare"
    if (out / "model.safetensors").exists():
        return out
    steps, batch, tokens, lr = SETTINGS[setting]["shakespeare"]
    corpus = "\n".join(text for name, text in sorted(texts.items())
                       if not name.startswith((FITNESS_PLAY, HELD_OUT_PLAY)))
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = torch.tensor(tokenizer(corpus[:4_000_000])["input_ids"])
    return _train(base, out, _text_batches(ids, batch, tokens, seed=1), steps, lr, "shakespeare")


def qa_expert(base: Path, train_items: list[dict], setting: str) -> Path:
    """The QA expert of ``setting`` (a key of SETTINGS), trained once and cached."""
    from transformers import AutoTokenizer

    out = CACHE / "experts" / setting / "qa"
    if (out / "model.safetensors").exists():
        return out
    steps, batch, _, lr = SETTINGS[setting]["qa"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    return _train(base, out, _answer_batches(tokenizer, train_items, batch, seed=2), steps, lr, "qa")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--quick", action="store_true")
    choice.add_argument("--gentle", action="store_true", help="a quarter of the full run's learning rate")
    parser.add_argument("--only", choices=["shakespeare", "qa"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    mode = "quick" if args.quick else "full"
    setting = "gentle" if args.gentle else mode
    downloads = download()
    base = base_model(downloads)
    if args.only in (None, "shakespeare"):
        print(shakespeare_expert(base, plays(downloads), setting))
    if args.only in (None, "qa"):
        train = [item for task in splits(downloads, mode).values() for item in task["train"]]
        print(qa_expert(base, train, setting))
    return 0


if __name__ == "__main__":
    sys.exit(main())
