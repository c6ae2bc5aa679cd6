"""Every merge method against a plain formula written here, with its corner cases."""

import math
import subprocess
import sys

import pytest
import torch
from conftest import TESTS, tiny_benchmark, tiny_model

from deap_llmmerge import MERGE_METHODS, ConfigError, PartMerge, SourcePool, make_toolbox
from deap_llmmerge.methods import check_method_options
from deap_llmmerge.methods import inputs as merge_inputs
from deap_llmmerge.models.engine import MergeEngine
from deap_llmmerge.models.plans import MergePlan

torch.manual_seed(0)
BASE = torch.randn(6, 5)
A = BASE + 0.1 * torch.randn(6, 5)
B = BASE + 0.1 * torch.randn(6, 5)
C = BASE + 0.1 * torch.randn(6, 5)
OPTIONS = {name: method.options for name, method in MERGE_METHODS.items()}


@pytest.fixture(autouse=True, params=["whole tensors", "blocks of 7"])
def block_size(request, monkeypatch):
    """Every test twice: kernels walking a tensor in one block, and in blocks of 7 entries (a last
    partial block, several blocks per row), as they walk a large tensor on a CPU."""
    if request.param == "blocks of 7":
        monkeypatch.setattr(merge_inputs, "BLOCK", 7)
    return request.param


def merge(name, tensors, base=None, generator=None, options=None, **params):
    method = MERGE_METHODS[name]
    packed = {key: tuple(value) if isinstance(value, (list, tuple)) else (value,) for key, value in params.items()}
    return method.merge(tensors, base, packed, generator, options)


def elect(deltas, weights):
    """TIES sign election written out element by element."""
    out = torch.zeros_like(deltas[0])
    flat = [d.flatten() for d in deltas]
    result = out.flatten()
    for i in range(result.numel()):
        weighted = [w * d[i] for w, d in zip(weights, flat)]
        majority = 1.0 if sum(weighted) >= 0 else -1.0
        kept = [(v, w) for v, w in zip(weighted, weights) if v != 0 and math.copysign(1.0, v) == majority]
        divisor = sum(w for _, w in kept) or 1.0
        result[i] = sum(v for v, _ in kept) / divisor
    return out


def test_every_method_is_registered_with_its_parameters():
    assert set(MERGE_METHODS) == {"take", "linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear",
                                  "breadcrumbs", "della", "model_stock", "sce", "nuslerp", "multislerp", "karcher",
                                  "nearswap"}
    assert MERGE_METHODS["ties"].per_source == ("weight", "density")
    assert MERGE_METHODS["breadcrumbs"].per_source == ("weight", "density", "gamma")
    assert MERGE_METHODS["della"].per_source == ("weight", "density", "epsilon")
    assert MERGE_METHODS["slerp"].per_part == ("t",)


@pytest.mark.parametrize("name", [name for name in MERGE_METHODS if name != "take"])
def test_contract_float32_finite_deterministic(name):
    method = MERGE_METHODS[name]
    tensors = [A, B, C][:method.max_sources or 3]
    params = {key: [method.defaults.get(key, 0.5)] * len(tensors) for key in method.per_source}
    params.update({key: [0.3] for key in method.per_part})
    if "density" in params:
        params["density"] = [0.6] * len(tensors)
    first = merge(name, tensors, BASE, torch.Generator().manual_seed(1), **params)
    again = merge(name, tensors, BASE, torch.Generator().manual_seed(1), **params)
    assert first.dtype == torch.float32 and first.shape == A.shape
    assert torch.isfinite(first).all() and torch.equal(first, again)
    empty = merge(name, [t[:, :0] for t in tensors], BASE[:, :0], torch.Generator().manual_seed(1), **params)
    assert empty.shape == (6, 0)  # a tensor with no entries (some checkpoints hold one) merges too


def test_linear_is_the_normalised_weighted_sum():
    torch.testing.assert_close(merge("linear", [A, B], weight=[0.3, 0.9]), (0.3 * A + 0.9 * B) / 1.2)
    torch.testing.assert_close(merge("linear", [A, B], options={"normalize": False}, weight=[0.3, 0.9]),
                               0.3 * A + 0.9 * B)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_slerp_follows_the_great_circle(t):
    a, b = A.flatten().double(), B.flatten().double()
    theta = torch.acos(torch.dot(a / a.norm(), b / b.norm()))
    want = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)
    torch.testing.assert_close(merge("slerp", [A, B], t=t).double().flatten(), want, atol=1e-5, rtol=1e-5)


def test_slerp_of_collinear_tensors_is_linear():
    torch.testing.assert_close(merge("slerp", [A, 2 * A], t=0.25), 0.75 * A + 0.5 * A)


def test_task_arithmetic_adds_weighted_task_vectors():
    want = BASE + 0.5 * (A - BASE) + 1.5 * (B - BASE)
    torch.testing.assert_close(merge("task_arithmetic", [A, B], BASE, weight=[0.5, 1.5]), want)


@pytest.mark.parametrize("weights", [[0.7, 0.4, 1.0], [0.7, -0.4, 1.0], [0.5, 0.0, 0.5]])
def test_ties_at_density_one_is_task_arithmetic_with_sign_election(weights):
    want = BASE + elect([A - BASE, B - BASE, C - BASE], weights)
    torch.testing.assert_close(merge("ties", [A, B, C], BASE, weight=weights, density=[1.0] * 3), want)


def test_sign_election_where_the_weighted_task_vectors_cancel_exactly():
    """The sum is 0 where they cancel: the positive sign is elected (mergekit's rule), as written out."""
    base = torch.zeros(4)
    a, b = torch.tensor([1.0, -2.0, 0.5, 0.0]), torch.tensor([-1.0, 2.0, 0.5, 0.0])
    want = elect([a, b], [0.5, 0.5])
    assert torch.equal(want, torch.tensor([1.0, 2.0, 0.5, 0.0]))
    torch.testing.assert_close(merge("ties", [a, b], base, weight=[0.5, 0.5], density=[1.0, 1.0]), want)
    torch.testing.assert_close(merge("dare_ties", [a, b], base, weight=[0.5, 0.5], density=[1.0, 1.0]),
                               torch.tensor([0.5, 1.0, 0.5, 0.0]))  # no normalizing: the agreeing sum


def test_ties_keeps_the_largest_entries_of_each_task_vector():
    delta = A - BASE
    k = int(0.4 * delta.numel())
    threshold = delta.abs().flatten().sort(descending=True).values[k - 1]
    trimmed = torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))
    got = merge("ties", [A], BASE, weight=[1.0], density=[0.4])
    torch.testing.assert_close(got, BASE + trimmed)
    assert int(((got - BASE) != 0).sum()) == k


@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "della"])
def test_a_zero_task_vector_leaves_the_base(name):
    method = MERGE_METHODS[name]
    params = {key: [0.8] * 2 for key in method.per_source}
    got = merge(name, [BASE, BASE], BASE, torch.Generator().manual_seed(0), **params)
    torch.testing.assert_close(got, BASE)


@pytest.mark.parametrize("name", ["linear", "slerp", "ties", "della", "breadcrumbs", "model_stock"])
def test_identical_sources_merge_to_themselves(name):
    method = MERGE_METHODS[name]
    params = {key: [1.0] * 2 for key in method.per_source}
    if not method.options.get("normalize", True):
        params["weight"] = [0.5, 0.5]  # a plain sum of two equal task vectors: half each
    params.update({key: [0.4] for key in method.per_part})
    got = merge(name, [A, A.clone()], BASE, torch.Generator().manual_seed(0), **params)
    torch.testing.assert_close(got, A, atol=1e-6, rtol=1e-5)


def test_dare_drops_a_density_share_and_rescales_to_the_l1_norm():
    big = torch.randn(200, 100)
    got = merge("dare_linear", [big], torch.zeros_like(big), torch.Generator().manual_seed(3), weight=[1.0],
                density=[0.3])
    kept = got != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.02
    torch.testing.assert_close(got.abs().sum(), big.abs().sum())
    torch.testing.assert_close(got[kept] / big[kept], torch.full_like(got[kept], got[kept][0] / big[kept][0]))
    no_rescale = merge("dare_linear", [big], torch.zeros_like(big), torch.Generator().manual_seed(3), weight=[1.0],
                       density=[0.3], options={"rescale": False})
    torch.testing.assert_close(no_rescale, torch.where(kept, big, torch.zeros_like(big)))


@pytest.mark.parametrize("name", ["dare_ties", "dare_linear", "della", "breadcrumbs"])
def test_density_one_is_task_arithmetic_like(name):
    method = MERGE_METHODS[name]
    params = {key: [1.0] * 2 for key in method.per_source}
    got = merge(name, [A, B], BASE, torch.Generator().manual_seed(0), **params)
    plain = merge("ties" if "ties" in name or name == "della" else "task_arithmetic", [A, B], BASE,
                  weight=[1.0, 1.0], **({"density": [1.0, 1.0]} if "ties" in name or name == "della" else {}),
                  options={"normalize": method.options.get("normalize", False)})
    torch.testing.assert_close(got, plain)


def test_breadcrumbs_drops_outliers_and_the_smallest():
    delta = torch.arange(1.0, 101.0)
    got = merge("breadcrumbs", [delta], torch.zeros(100), weight=[1.0], density=[0.5], gamma=[0.1])
    assert torch.equal(got != 0, (delta > 40) & (delta <= 90))


def test_della_keeps_large_entries_more_often():
    delta = torch.linspace(0.01, 1.0, 1000).repeat(50, 1)
    got = merge("della", [delta], torch.zeros_like(delta), torch.Generator().manual_seed(0), weight=[1.0],
                density=[0.5], epsilon=[0.3])
    kept = (got != 0).float().mean(dim=0)
    assert kept[:100].mean() < 0.3 < 0.7 < kept[-100:].mean()


def test_della_ranks_magnitudes_within_rows_ties_in_column_order():
    """The rank della's keep probability rises with: a plain stable argsort of |entry| per row, on bf16-like
    rows full of ties (equal magnitudes of either sign, zeros)."""
    from deap_llmmerge.methods.inputs import _row_rank

    rows = (torch.randn(7, 300, generator=torch.Generator().manual_seed(0)) * 4).round() / 4
    rows[:, ::9] = 0.0
    order = torch.argsort(rows.abs(), dim=1, stable=True)
    want = torch.argsort(order, dim=1)  # the position of each column in its row's order
    got = _row_rank(rows)
    assert got.dtype == torch.int16 and torch.equal(got.long(), want)
    base = torch.randint(-8, 8, (7, 300), generator=torch.Generator().manual_seed(1)) / 4  # sums stay exact
    assert torch.equal(_row_rank(rows + base, base), got)  # ranks of the difference
    long_rows = (torch.randn(2, 40_000, generator=torch.Generator().manual_seed(2)) * 4).round() / 4
    got = _row_rank(long_rows)  # ranks past int16
    want = torch.argsort(torch.argsort(long_rows.abs(), dim=1, stable=True), dim=1)
    assert got.dtype == torch.int32 and torch.equal(got.long(), want)


def test_model_stock_interpolates_by_the_mean_cosine():
    deltas = [(t - BASE).flatten() for t in (A, B, C)]
    cosines = [torch.dot(x, y) / (x.norm() * y.norm()) for i, x in enumerate(deltas) for y in deltas[i + 1:]]
    cos = torch.stack(cosines).mean()
    t = 3 * cos / (1 + 2 * cos)
    want = t * (A + B + C) / 3 + (1 - t) * BASE
    torch.testing.assert_close(merge("model_stock", [A, B, C], BASE), want)


def test_bf16_sources_are_merged_in_float32_and_written_in_bf16():
    a, b, base = A.bfloat16(), B.bfloat16(), BASE.bfloat16()
    got = merge("ties", [a, b], base, weight=[1.0, 0.5], density=[1.0, 1.0])
    want = merge("ties", [a.float(), b.float()], base.float(), weight=[1.0, 0.5], density=[1.0, 1.0])
    assert got.dtype == torch.float32 and torch.equal(got, want)
    pool = SourcePool([tiny_model("llama", 1).bfloat16(), tiny_model("llama", 2).bfloat16()])
    engine = MergeEngine(pool, pool.new_skeleton())
    plan = MergePlan(tuple((part, PartMerge("ties", (1,), part, (("weight", (0.5,)), ("density", (1.0,))), 0))
                           for part in pool.part_names))
    merged = dict(engine.apply(plan).named_parameters())
    name = "model.layers.0.mlp.up_proj.weight"
    base_t, src = pool.tensors[0][name].float(), pool.tensors[1][name].float()
    assert merged[name].dtype == torch.bfloat16
    assert torch.equal(merged[name], (base_t + (src - base_t) * 0.5 / 0.5).bfloat16())


DARE_IN_A_PROCESS = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_model
from deap_llmmerge import SourcePool, PartMerge
from deap_llmmerge.models.engine import MergeEngine
from deap_llmmerge.methods import inputs
from deap_llmmerge.models.plans import MergePlan
inputs.BLOCK = int(sys.argv[2])
pool = SourcePool([tiny_model("llama", 1), tiny_model("llama", 2), tiny_model("llama", 3)])
params = (("weight", (0.6, 0.8)), ("density", (0.3, 0.5)), ("seed", (7.0,)))
plan = MergePlan(tuple((part, PartMerge("dare_ties", (1, 2), part, params, 0)) for part in pool.part_names))
model = MergeEngine(pool, pool.new_skeleton()).apply(plan)
torch.save({{k: v.detach().clone() for k, v in model.named_parameters()}}, sys.argv[1])
"""


@pytest.mark.slow  # starts processes
def test_dare_with_the_same_genome_gives_the_same_tensors_in_two_processes(tmp_path):

    script = DARE_IN_A_PROCESS.format(tests=str(TESTS))
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / name), str(merge_inputs.BLOCK)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name in ("one.pt", "two.pt")]
    assert [run.wait() for run in runs] == [0, 0]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    base = dict(tiny_model("llama", 1).named_parameters())
    assert not torch.equal(one["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


def test_dare_draws_differ_between_parts_and_seeds():
    pool = SourcePool([tiny_model("llama", 1), tiny_model("llama", 2)])
    engine = MergeEngine(pool, pool.new_skeleton())

    def built(seed):
        params = (("weight", (1.0,)), ("density", (0.5,)), ("seed", (float(seed),)))
        plan = MergePlan(tuple((part, PartMerge("dare_linear", (1,), part, params, 0)) for part in pool.part_names))
        model = engine.apply(plan)
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    first, same, other = built(0), built(0), built(1)
    name = "model.layers.1.self_attn.q_proj.weight"
    assert torch.equal(first[name], same[name]) and not torch.equal(first[name], other[name])
    mask0 = first["model.layers.0.self_attn.q_proj.weight"] != pool.tensors[0]["model.layers.0.self_attn.q_proj.weight"]
    mask1 = first[name] != pool.tensors[0][name]
    assert not torch.equal(mask0, mask1)


def test_a_linear_merge_with_weights_summing_to_zero_is_an_invalid_genome():
    from deap_llmmerge import LLMMergeGA

    ga = LLMMergeGA([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), population_size=2,
                    max_generations=0, genome="methods", method="linear")
    n = len(ga.pool.part_names)
    assert ga.toolbox.evaluate([0.0, 0.0] * n) == (float("-inf"), float("inf"))


@pytest.mark.parametrize("k", [1, 1000, 150_000, 160_000, 299_999])
def test_top_k_by_magnitude_selects_exactly_the_k_largest(k):
    from deap_llmmerge.methods.inputs import top_mask

    generator = torch.Generator().manual_seed(k)
    values = torch.randn(300_000, generator=generator)
    values[::7] = 0.5  # many equal magnitudes, of both signs, one of them maybe at the threshold
    values[::14] = -0.5
    values[1::11] = 0.0
    order = torch.argsort(values.abs(), descending=True, stable=True)
    want = torch.zeros(len(values), dtype=torch.bool)
    want[order[:k]] = True
    assert torch.equal(top_mask(values, k), want)
    strided = torch.stack([values, values]).t()[:, 0]  # the same values, not contiguous in memory
    assert torch.equal(top_mask(strided, k), want)


@pytest.mark.slow  # starts processes
def test_merges_through_the_engine_equal_plain_merges_candidate_after_candidate():
    """Cached task vectors, magnitude buckets and reused work buffers never leak from one candidate (or
    tensor) into the next: every tensor equals the same merge computed alone, with nothing cached."""
    from deap_llmmerge.models.engine import step_seed

    pool = SourcePool([tiny_model("llama", 1), tiny_model("llama", 2), tiny_model("llama", 3)])
    engine = MergeEngine(pool, pool.new_skeleton())
    for name, density in (("ties", 0.3), ("ties", 0.7), ("dare_ties", 0.5), ("della", 0.4), ("breadcrumbs", 0.6),
                          ("task_arithmetic", 1.0), ("dare_linear", 0.2), ("ties", 0.3)):
        spec = MERGE_METHODS[name]
        params = (("weight", (0.7, -0.4)),)
        if "density" in spec.per_source:
            params += (("density", (density, density + 0.1)),)
        params += tuple((key, (spec.defaults[key],) * 2) for key in spec.per_source if key not in ("weight", "density"))
        if spec.random:
            params += (("seed", (0.0,)),)
        plan = MergePlan(tuple((part, PartMerge(name, (1, 2), part, params, 0)) for part in pool.part_names))
        model = engine.apply(plan)
        for part, step in plan.parts:
            for inner, target in engine.skeletons[engine.reference_depth].targets[part]:
                tensors = [pool.tensor(k, part, inner) for k in (1, 2)]
                generator = torch.Generator().manual_seed(step_seed(step, part, inner)) if spec.random else None
                want = spec.merge(tensors, pool.tensor(0, part, inner), step.kwargs, generator)
                assert torch.equal(target, want), (name, part, inner)
        assert model is engine.model


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("block", [8, 256])
def test_dare_draws_streamed_block_by_block_equal_whole_tensor_draws(monkeypatch, block, rescale):
    """The kept entries do not depend on how a kernel walks the tensor: each source's mask is its whole
    tensor of draws, drawn from the step's generator in source order (the first source's, then the
    second's), so a recipe rebuilds the same model on every device and block size."""
    from deap_llmmerge.methods.sparsify import below, uniform_draws

    monkeypatch.setattr(merge_inputs, "BLOCK", block)
    generator = torch.Generator().manual_seed(11)
    base = torch.randn(37, 29, generator=generator)  # 1073 entries: a partial last block
    sources = [base + torch.randn(37, 29, generator=generator) for _ in range(2)]
    densities, weights = [0.3, 0.6], [0.7, 0.5]
    draws = torch.Generator().manual_seed(5)
    want = base.clone()
    for source, density, weight in zip(sources, densities, weights):
        delta = source - base
        kept = torch.where(uniform_draws(base.shape, draws, base.device) < below(density), delta, 0.0)
        factor = delta.abs().sum() / kept.abs().sum() if rescale else 1.0
        want += weight * factor * kept
    got = merge("dare_linear", sources, base, torch.Generator().manual_seed(5), {"rescale": rescale},
                weight=weights, density=densities)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", [name for name in MERGE_METHODS if name != "take"])
def test_every_methods_own_options_pass_the_option_check(name):
    check_method_options({name: dict(MERGE_METHODS[name].options)})


def test_make_toolbox_refuses_an_unknown_option_before_loading_anything():
    with pytest.raises(ConfigError, match=r"method_options.ties: no option 'lamda' \(did you mean 'lambda'\?\)"):
        make_toolbox(["/nowhere/a", "/nowhere/b"], tiny_benchmark(), "methods", method="ties",
                     method_options={"ties": {"lamda": 0.5}})


def test_draws_come_from_the_cpu_generator_whatever_device_merges():
    """A recipe found on a GPU must build the same model on a CPU: the draws of a tensor that lives elsewhere
    (the meta device stands in for a GPU here) use the CPU generator exactly as the CPU's own draws do."""
    from deap_llmmerge.methods.sparsify import draw_generator, uniform_draws, word_count

    assert draw_generator(7).device.type == "cpu"
    on_cpu, elsewhere = draw_generator(7), draw_generator(7)
    drawn = uniform_draws(torch.Size([1000]), on_cpu, torch.device("cpu"))
    moved = uniform_draws(torch.Size([1000]), elsewhere, torch.device("meta"))
    assert moved.device.type == "meta" and moved.shape == drawn.shape
    assert torch.equal(on_cpu.get_state(), elsewhere.get_state())
    words = torch.empty(word_count(1000), dtype=torch.int64, device="meta")  # a work buffer on that device
    uniform_draws(torch.Size([1000]), elsewhere, torch.device("meta"), words)
    uniform_draws(torch.Size([1000]), on_cpu, torch.device("cpu"))
    assert torch.equal(on_cpu.get_state(), elsewhere.get_state())
