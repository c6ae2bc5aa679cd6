"""The SmolLM2 study never scores the search on held-out items, nor trains the QA expert on either."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT

EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

from smollm2_data import CACHE, SPLITS, split, splits  # noqa: E402
from smollm2_study import BUDGET  # noqa: E402


@pytest.mark.parametrize("mode", list(SPLITS))
def test_split_parts_are_disjoint_and_stable(mode):
    sizes = SPLITS[mode]
    items = [f"item-{i}" for i in range(sum(sizes.values()) + 17)]
    parts = split(items, sizes)
    assert {name: len(part) for name, part in parts.items()} == sizes
    seen = [item for part in parts.values() for item in part]
    assert len(seen) == len(set(seen))
    assert split(items, sizes) == parts  # the same split on every run (the expert cache relies on it)


@pytest.mark.parametrize("mode", list(BUDGET))
def test_the_budget_takes_items_from_inside_its_split(mode):
    assert BUDGET[mode]["fitness_items"] <= SPLITS[mode]["fitness"] + SPLITS[mode]["more_fitness"]
    assert BUDGET[mode]["held_out_items"] <= SPLITS[mode]["held_out"]


def test_asking_for_more_items_than_exist_is_refused():
    with pytest.raises(ValueError, match="5 items asked for, 4 available"):
        split([1, 2, 3, 4], {"fitness": 2, "held_out": 3})


@pytest.mark.skipif(not (CACHE / "downloads").is_dir(), reason="the study's downloads are not cached here")
def test_real_items_do_not_repeat_across_parts():
    """On the real tasks, no question text (context and choices) is in two parts, even as a duplicate row."""
    for task, parts in splits(CACHE / "downloads", "full").items():
        keys = {name: {json.dumps([row["context"], row["choices"]]) for row in rows} for name, rows in parts.items()}
        assert not keys["fitness"] & keys["held_out"], task
        assert not keys["train"] & (keys["fitness"] | keys["held_out"]), task


def test_more_fitness_items_leave_the_training_and_table_items_as_they_were():
    """The extra fitness items come from the end of the former 120-item held-out block: the cached QA
    expert's training items and the 40 held-out items per task of the table do not move."""
    items = list(range(1000))
    before = split(items, {"fitness": 12, "held_out": 120, "train": 300})
    after = split(items, SPLITS["full"])
    assert after["train"] == before["train"]
    assert after["held_out"][:40] == before["held_out"][:40]
    assert after["more_fitness"] == before["held_out"][88:]
