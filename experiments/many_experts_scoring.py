"""Fixed merges of the many-expert study scored on a split, per item, in two worker processes, cached on disk.

A job is ``(label, split, plan, options)``: a merge plan (``MergePlan.to_dict()`` form, as recipe.json holds
it) and the run-wide method options it needs (``{"ties": {"lambda": 0.5}}``). Each worker maps the sources
once (the base and the four adapters merged into it on load), keeps one merge engine and one population
scorer per split (packed choices, batches of one length: the search's own fast path), and returns, per
skill, what the merge did on every item (``correct`` 0/1, ``score`` the margin of the right choice).
Results go to ``scores-SPLIT.json`` in the study's work folder, one entry per label, written atomically
after each job, so a study that stops scores only what is left when it runs again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

_WORKER: dict = {}


def _init(experts: list[str], base: str, files: dict[str, dict[str, str]]) -> None:
    import torch

    torch.set_num_threads(1)
    from deap_llmmerge import build_benchmark
    from deap_llmmerge.models.engine import MergeEngine
    from deap_llmmerge.models.loading import no_progress_bars
    from deap_llmmerge.models.sources import SourcePool
    from deap_llmmerge.scoring.population import PopulationScorer

    with no_progress_bars():
        pool = SourcePool(experts, base=base)
    engine = MergeEngine(pool, pool.new_skeleton().eval())
    scorers = {split: PopulationScorer(engine, {skill: build_benchmark("multiple_choice", path, base)
                                                for skill, path in paths.items()}, 16, 2**30)
               for split, paths in files.items()}
    _WORKER.update(engine=engine, scorers=scorers, options=None)


def _score(job: tuple) -> tuple:
    from deap_llmmerge.models.plans import MergePlan
    from deap_llmmerge.scoring.items import item_scores

    label, split, plan, options = job
    engine = _WORKER["engine"]
    if options != _WORKER["options"]:  # other options: nothing the skeleton holds may be reused
        engine.options = options
        for skeleton in engine.skeletons.values():
            skeleton.loaded.clear()
        _WORKER["options"] = options
    errors: list = []
    found = _WORKER["scorers"][split].score([MergePlan.from_dict(plan)], lambda index, exc: errors.append(exc))
    if errors:
        raise errors[0]
    _, tables = found[0]
    out = {}
    for skill, table in tables.items():
        items = item_scores(table, "multiple_choice")
        out[skill] = {"correct": "".join(str(int(c)) for c in items.correct),
                      "score": [round(float(s), 3) for s in items.score]}
    return label, split, out


def job_key(plan: dict, options: dict) -> str:
    return hashlib.sha256(json.dumps([plan, options], sort_keys=True).encode()).hexdigest()[:16]


def _write_atomically(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


class SplitScores:
    """The scores of every labelled merge on the study's splits, with two worker processes to score more."""

    def __init__(self, work: Path, experts: list[Path], base: Path, files: dict[str, dict[str, Path]],
                 processes: int = 2) -> None:
        self.work, self.experts, self.base, self.processes = work, experts, base, processes
        self.files = {split: {skill: str(path) for skill, path in paths.items()} for split, paths in files.items()}
        self.scores = {}
        for split in files:
            path = work / f"scores-{split}.json"
            self.scores[split] = json.loads(path.read_text()) if path.exists() else {}
        self._pool = None

    def missing(self, jobs: Iterable[tuple]) -> list[tuple]:
        return [job for job in jobs
                if self.scores[job[1]].get(job[0], {}).get("key") != job_key(job[2], job[3])]

    def score(self, jobs: Iterable[tuple], say: str = "") -> None:
        """Score ``(label, split, plan, options)`` jobs not scored yet (the same label with another plan is
        scored again)."""
        todo = []
        for job in self.missing(jobs):  # the same merge under another label: its scores, copied
            key, done = job_key(job[2], job[3]), self.scores[job[1]]
            same = next((entry for entry in done.values() if entry.get("key") == key), None)
            if same is not None:
                done[job[0]] = same
            elif all(job[:2] != other[:2] for other in todo):
                todo.append(job)
        if not todo:
            return
        keys = {(label, split): job_key(plan, options) for label, split, plan, options in todo}
        if self._pool is None:  # a worker that fails to start breaks the pool (no endless restarts)
            self._pool = ProcessPoolExecutor(self.processes, multiprocessing.get_context("spawn"), _init,
                                             ([str(p) for p in self.experts], str(self.base), self.files))
        futures = [self._pool.submit(_score, job) for job in todo]
        for done, future in enumerate(as_completed(futures), 1):
            label, split, items = future.result()
            self.scores[split][label] = {"key": keys[(label, split)], **items}
            _write_atomically(self.work / f"scores-{split}.json", self.scores[split])
            print(f"  {say}{split}: {label} ({done}/{len(todo)})", flush=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def correct(self, split: str, label: str) -> dict[str, list[int]]:
        """Per skill, the merge's 0/1 per item."""
        entry = self.scores[split][label]
        return {skill: [int(c) for c in value["correct"]] for skill, value in entry.items() if skill != "key"}
