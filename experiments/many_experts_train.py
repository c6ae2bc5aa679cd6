"""The many-expert study's experts: one LoRA adapter of SmolLM2-135M-Instruct per skill, one fixed recipe for all.

Recipe (a practitioner's first LoRA fine-tune, not tuned to any skill, the same for every skill): rank 8,
alpha 16, no dropout, on every linear projection of every decoder layer (q, k, v, o, gate, up, down); the
loss on the tokens of the correct choice after its context (supervised fine-tuning on the answers, as
lm-evaluation-harness scores them); AdamW, learning rate 2e-4 after 10 warm-up steps, no weight decay,
200 steps of 8 items drawn from the skill's training split (seed 0); one torch thread.

The adapters are committed under experiments/results/many-experts/experts/SKILL/ (about 10 MB each), with the
recipe, the losses and the wall time in ``training.json``; a skill whose adapter exists is not retrained.
Their ``adapter_config.json`` names the base by its hub id (HuggingFaceTB/SmolLM2-135M-Instruct), so a run
merges them into the base its config's ``base:`` names.

    .venv/bin/python experiments/many_experts_train.py [--only SKILL ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from many_experts_data import SKILLS, splits  # noqa: E402
from smollm2_data import ROOT, base_model, download  # noqa: E402
from smollm2_experts import _answer_batches  # noqa: E402

EXPERTS = ROOT / "experiments" / "results" / "many-experts" / "experts"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
RECIPE = {"rank": 8, "alpha": 16, "dropout": 0.0,
          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
          "learning_rate": 2e-4, "warmup_steps": 10, "steps": 200, "batch": 8, "weight_decay": 0.0, "seed": 0,
          "loss": "tokens of the correct choice after its context"}


def train_expert(base: Path, skill: str, items: list[dict], out: Path, recipe: dict = RECIPE) -> Path:
    """The LoRA adapter of ``skill`` trained on ``items`` with ``recipe``, written to ``out`` (once)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "adapter_model.safetensors").exists():
        return out
    torch.manual_seed(recipe["seed"])
    model = AutoModelForCausalLM.from_pretrained(base)
    model = get_peft_model(model, LoraConfig(r=recipe["rank"], lora_alpha=recipe["alpha"],
                                             lora_dropout=recipe["dropout"], target_modules=recipe["target_modules"],
                                             task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"])
    warmup = recipe["warmup_steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    batches = _answer_batches(AutoTokenizer.from_pretrained(base), items, recipe["batch"], seed=recipe["seed"])
    model.train()
    started, losses = time.time(), []
    for step in range(recipe["steps"]):
        loss = model(**next(batches)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(round(loss.item(), 4))
        if step % 20 == 0 or step == recipe["steps"] - 1:
            print(f"  {skill} step {step}/{recipe['steps']}: loss {loss.item():.3f} ({time.time() - started:.0f} s)",
                  flush=True)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    (partial / "README.md").unlink(missing_ok=True)  # peft's empty model card template; training.json says it all
    config = json.loads((partial / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = HUB_ID
    (partial / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (partial / "training.json").write_text(json.dumps(
        {"skill": skill, "base": HUB_ID, "tables": list(SKILLS[skill]), "training_items": len(items),
         "recipe": recipe, "seconds": round(time.time() - started), "losses": losses}, indent=1) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(out)
    return out


def experts(only: list[str] | None = None) -> dict[str, Path]:
    """Every skill's adapter folder, trained where missing."""
    downloads = download()
    base = base_model(downloads)
    parts = None
    out = {}
    for skill in SKILLS:
        folder = EXPERTS / skill
        if only and skill not in only:
            continue
        if not (folder / "adapter_model.safetensors").exists():
            parts = parts or splits(downloads, "full")
            print(f"training the {skill} expert (LoRA, {RECIPE['steps']} steps)", flush=True)
            train_expert(base, skill, parts[skill]["train"], folder)
        out[skill] = folder
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SKILLS), metavar="SKILL")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for skill, folder in experts(args.only).items():
        print(skill, folder.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
