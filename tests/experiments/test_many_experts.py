"""The many-expert study's splits, selection rule, paired bootstrap and baseline recipes."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT, tiny_model

sys.path.insert(0, str(ROOT / "experiments"))

from many_experts_data import SIZES, SPLITS, cut, splits, text_key  # noqa: E402
from many_experts_stats import paired_bootstrap_by_skill, select, target  # noqa: E402
from smollm2_data import CACHE  # noqa: E402


def test_the_full_test_split_is_at_least_200_items_a_skill_and_1000_in_all():
    from many_experts_data import SKILLS

    assert SIZES["full"]["test"] >= 200 and SIZES["full"]["test"] * len(SKILLS) >= 1000


def test_cut_gives_disjoint_runs_of_a_fixed_shuffle_and_train_takes_the_rest():
    items = [{"context": f"q{i}"} for i in range(30)]
    sizes = {"test": 5, "selection": 4, "search": 3, "train": 100}
    parts = cut(items, sizes)
    assert [len(parts[name]) for name in SPLITS] == [5, 4, 3, 18]
    contexts = [item["context"] for name in SPLITS for item in parts[name]]
    assert sorted(contexts) == sorted(item["context"] for item in items)
    assert cut(items, sizes) == parts
    with pytest.raises(ValueError, match="12 items needed for the test, selection and search splits, 10 available"):
        cut(items[:10], sizes)


def test_the_same_question_with_other_spacing_or_case_is_the_same_text():
    assert text_key({"context": "What  is\nwater?"}) == text_key({"context": "what is water?"})


@pytest.mark.skipif(not (CACHE / "downloads").is_dir(), reason="the study's downloads are not cached here "
                    "(python experiments/many_experts.py --quick fetches them)")
def test_real_splits_share_no_question_text_and_quick_takes_the_first_items():
    full, quick = splits(CACHE / "downloads", "full"), splits(CACHE / "downloads", "quick")
    seen: dict[str, str] = {}
    for skill, parts in full.items():
        assert {name: len(parts[name]) for name in SPLITS if name != "train"} == \
            {name: SIZES["full"][name] for name in SPLITS if name != "train"}
        for name in SPLITS:
            for item in parts[name]:
                key = text_key(item)
                assert seen.setdefault(key, f"{skill}/{name}") == f"{skill}/{name}", key
            assert quick[skill][name] == parts[name][:SIZES["quick"][name]]


def test_the_target_is_the_mean_of_the_skills_accuracies_not_of_all_items():
    assert target({"a": [1, 1, 1, 1], "b": [0, 1]}) == pytest.approx((1.0 + 0.5) / 2)


def test_selection_takes_the_best_selection_target_and_the_first_on_a_tie():
    selection = {"x": {"a": [1, 0], "b": [0, 0]}, "y": {"a": [1, 1], "b": [0, 0]}, "z": {"a": [0, 0], "b": [1, 1]}}
    assert select(["x", "y", "z"], selection) == "y"  # y and z both 0.5: y is listed first
    assert select(["z", "y"], selection) == "z"
    assert select(["x"], selection) == "x"
    with pytest.raises(ValueError, match="no candidates"):
        select([], selection)


def test_paired_bootstrap_against_hand_computed_cases():
    # one skill, differences (0, 1): resampled means are 0, 0.5, 1 with chances 1/4, 1/2, 1/4
    mean, low, high = paired_bootstrap_by_skill({"s": [1, 1]}, {"s": [1, 0]})
    assert (mean, low, high) == (0.5, 0.0, 1.0)
    # a skill where a always wins by 1 and one where they never differ: the target differs by exactly 0.5
    assert paired_bootstrap_by_skill({"s": [1, 1, 1], "t": [0, 1]}, {"s": [0, 0, 0], "t": [0, 1]}) == (0.5, 0.5, 0.5)
    # the interval narrows with more items of the same differences
    few = paired_bootstrap_by_skill({"s": [1, 0] * 10}, {"s": [0, 0] * 10})
    many = paired_bootstrap_by_skill({"s": [1, 0] * 1000}, {"s": [0, 0] * 1000})
    assert few[0] == many[0] == 0.5 and many[2] - many[1] < (few[2] - few[1]) / 5


def test_paired_bootstrap_refuses_unpaired_items():
    with pytest.raises(ValueError, match="s: need one value per item for both, got 2 and 3"):
        paired_bootstrap_by_skill({"s": [1, 0]}, {"s": [1, 0, 1]})
    with pytest.raises(ValueError, match="different skills"):
        paired_bootstrap_by_skill({"s": [1]}, {"t": [1]})


def test_baselines_are_valid_plans_and_each_grid_point_is_its_own_merge(tmp_path):
    """Every baseline is a plan the engine accepts over four experts and a separate base; the tuned families
    hold one merge per grid point, and TIES's lambda travels as the method option."""
    from many_experts import GRIDS, baselines

    from deap_llmmerge import MERGE_METHODS, MergePlan

    tiny_model("llama", 0).save_pretrained(tmp_path / "base")
    setup = {"base": tmp_path / "base", "experts": {s: tmp_path / s for s in ("a", "b", "c", "d")},
             "grids": GRIDS["full"]}
    found = baselines(setup)
    parts = list(MergePlan.from_dict(found["base"]["plan"]).to_dict())
    for entry in found.values():
        MergePlan.from_dict(entry["plan"]).validate(parts, 5, MERGE_METHODS)
    assert found["base"]["plan"]["embed"] == {"method": "take", "sources": [4], "source_part": "embed"}
    assert found["c expert"]["plan"]["layers.0"]["sources"] == [2]
    families = {}
    for entry in found.values():
        if entry["family"]:
            families.setdefault(entry["family"], []).append(entry)
    assert {f: len(v) for f, v in families.items()} == {
        "task arithmetic, tuned": len(GRIDS["full"]["task_arithmetic"]), "TIES, tuned": len(GRIDS["full"]["ties"]),
        "DARE-TIES, tuned": len(GRIDS["full"]["dare_ties"])}
    ties = found["TIES, lambda 1.5, density 0.2"]
    assert ties["options"] == {"ties": {"lambda": 1.5}} and ties["plan"]["layers.1"]["density"] == [0.2] * 4
    assert found["task arithmetic, lambda 0.3"]["plan"]["head"]["weight"] == [0.3] * 4
