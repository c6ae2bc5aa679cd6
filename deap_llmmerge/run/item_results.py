"""Per-item results beside the checkpoint (``item_results.npz``): what every merge the run scored did on each
benchmark item, one row per merge in the order of the checkpoint's cache, so that they survive ``--resume``.

Written atomically just before ``checkpoint.json`` (the cache only grows, so its first rows are always
those of the checkpoint on disk); read with ``allow_pickle=False``: loading runs no code.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..scoring.cached_map import CachedMap
from ..scoring.items import ItemScores
from .output import atomic_write_bytes

__all__ = ["ITEMS_NAME", "save_item_results", "load_item_results"]

ITEMS_NAME = "item_results.npz"


def save_item_results(path: Path, cached_map: CachedMap) -> None:
    """Per benchmark, ``correct`` and ``score`` as ``[merges, items]`` float16 arrays and ``scored`` (which
    merges have results: a failed one has none)."""
    keys = list(cached_map.cache)
    arrays: dict[str, np.ndarray] = {}
    benchmarks = {name: len(scores) for items in cached_map.items.values() for name, scores in items.items()}
    for name, count in benchmarks.items():
        correct = np.zeros((len(keys), count), dtype=np.float16)
        score = np.zeros((len(keys), count), dtype=np.float16)
        scored = np.zeros(len(keys), dtype=bool)
        for row, key in enumerate(keys):
            found = cached_map.items.get(key, {}).get(name)
            if found is not None:
                correct[row], score[row], scored[row] = found.correct, found.score, True
        arrays.update({f"{name}/correct": correct, f"{name}/score": score, f"{name}/scored": scored})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_item_results(path: Path, cached_map: CachedMap) -> None:
    """Give the merges of a restored cache their item results back (none when the file is missing: a run
    from before they were kept)."""
    if not path.is_file():
        return
    keys = list(cached_map.cache)
    with np.load(path, allow_pickle=False) as content:
        names = {name.rsplit("/", 1)[0] for name in content.files}
        for name in names:
            correct, score, scored = (content[f"{name}/{part}"] for part in ("correct", "score", "scored"))
            for row, key in enumerate(keys[:len(scored)]):
                if scored[row]:
                    cached_map.items.setdefault(key, {})[name] = ItemScores(correct[row], score[row])
