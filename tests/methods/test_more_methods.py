"""The methods a mergekit user looks for beside the classics (sce, nuslerp, multislerp, karcher, nearswap):
what each computes on cases worked by hand (the interop test checks them against mergekit itself)."""

import math

import pytest
import torch
from conftest import tiny_benchmark, tiny_model

from deap_llmmerge import ConfigError, make_toolbox
from deap_llmmerge.methods import MERGE_METHODS


def merge(name, tensors, base=None, **params):
    method = MERGE_METHODS[name]
    params = {key: value if key in method.per_source else [value] for key, value in params.items()}
    return method.merge(tensors, base, params)


def test_nuslerp_is_slerp_at_the_weights_share_and_karcher_the_midpoint_of_two():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    quarter = merge("nuslerp", [a, b], weight=[3.0, 1.0])  # t = 1/4 of the 90 degrees between them
    assert torch.allclose(quarter, math.sin(0.75 * math.pi / 2) * a + math.sin(0.25 * math.pi / 2) * b)
    assert torch.allclose(merge("karcher", [a, b]), 1.5 * torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4)]),
                          atol=1e-5)  # the mean direction, scaled by the mean norm


def test_multislerp_keeps_the_weighted_norm_and_one_weight_gives_that_source():
    a, b, c = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0]), torch.tensor([0.0, 0.0, 3.0])
    merged = merge("multislerp", [a, b, c], weight=[1.0, 1.0, 2.0])
    assert torch.linalg.vector_norm(merged) == pytest.approx((1 + 2 + 6) / 4, rel=1e-5)
    assert torch.allclose(merge("multislerp", [a, b, c], weight=[0.0, 1.0, 0.0]), b, atol=1e-6)


def test_nearswap_takes_the_source_only_where_it_is_within_t_of_the_base():
    base, source = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.01, 0.1, 1.0])
    assert torch.allclose(merge("nearswap", [source], base, t=0.05), torch.tensor([0.01, 0.05, 0.05]))
    assert torch.equal(merge("nearswap", [source], base, t=0.0), base)


def test_sce_erases_the_minority_sign_and_weights_by_mean_square():
    base = torch.zeros(3)
    a, b = torch.tensor([2.0, 2.0, -2.0]), torch.tensor([1.0, -1.0, 0.5])  # mean squares 4 and 0.75
    expected = torch.tensor([(4 * 2 + 0.75 * 1) / 4.75, 2.0, -2.0])  # entries 1 and 2: b's sign is the minority
    assert torch.allclose(merge("sce", [a, b], base, select_topk=1.0), expected)
    top = merge("sce", [a, b], base, select_topk=0.34)  # one entry kept: the largest variance across the two
    assert torch.allclose(top, torch.tensor([0.0, 2.0, 0.0]))


def test_sce_and_nearswap_are_searched_beside_linear_and_give_back_pure_sources():
    models, data = [tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark()
    with pytest.raises(ConfigError, match="method sce cannot give back each source .* search_methods: "
                                          r"\[linear, sce\]"):
        make_toolbox(models, data, "methods", method="sce")
    toolbox = make_toolbox(models, data, "methods", method="search",
                           search_methods=["linear", "sce", "nuslerp", "multislerp", "karcher", "nearswap"])
    ids = data["input_ids"]
    for k, model in enumerate(models):
        merged = toolbox.evaluate.func.merged_model(toolbox.pure(source=k))
        with torch.no_grad():
            assert torch.equal(merged(input_ids=ids).logits, model(input_ids=ids).logits)
    for _ in range(5):
        assert all(math.isfinite(v) for v in toolbox.evaluate(toolbox.individual()))
