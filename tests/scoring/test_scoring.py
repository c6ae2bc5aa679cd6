"""Population scoring: the savings change no metric, only genomes travel, state lives and dies with its run."""

import gc
import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAMILY_CASES, HELPERS, tiny_benchmark, tiny_model
from deap import algorithms, tools

from deap_llmmerge import BenchmarkData, BenchmarkDataError, LLMMergeGA, PoolMap, make_toolbox
from deap_llmmerge.scoring import evaluator as evaluation_module
from deap_llmmerge.scoring.metrics import benchmark_metrics


def padded_benchmark(seed=0):
    """Rows of several lengths, padded on the left for some and on the right for others, sparse labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (10, 12), generator=generator)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :6] = -100
    for row in range(0, 10, 3):
        mask[row, :row % 4 + 1] = 0  # left padding
        labels[row, :row % 4 + 2] = -100
    for row in range(1, 10, 4):
        mask[row, 9:] = 0  # right padding
        labels[row, 9:] = -100
    return BenchmarkData(ids, labels, mask)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("case", ["choice", "blend", "methods-ties", "stack"])
def test_shared_prefixes_and_head_at_labels_equal_the_plain_path(arch, case):
    sources = [tiny_model(arch, 1), tiny_model(arch, 2), tiny_model(arch, 3)]
    data = padded_benchmark()
    toolbox = make_toolbox(sources, data, batch_size=4, **FAMILY_CASES[case])
    evaluator = toolbox.evaluate.func
    random.seed(1)
    population = toolbox.population(n=8)
    population += [toolbox.clone(ind) for ind in population[:4]]
    for ind in population[8:]:  # children that share long prefixes with their parents
        toolbox.mutate(ind)
    fast = toolbox.map(toolbox.evaluate, population)
    scorer = evaluator.state.scorer
    assert scorer.prefix_sharing and scorer.head_at_labels
    for ind, values in zip(population, fast):
        model = evaluator.merged_model(ind)
        plain = benchmark_metrics(model, data, 4)
        assert values == (plain["accuracy"], plain["loss"]), ind
    if case in ("choice", "stack"):
        assert scorer.layers_saved > 0


def test_without_memory_for_prefixes_nothing_is_kept_and_scores_are_the_same():
    sources = [tiny_model("llama", 1), tiny_model("llama", 2)]
    population = [[0, 0, 0, 0, 1], [0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
    kept = make_toolbox(sources, tiny_benchmark(), "choice")
    none = make_toolbox(sources, tiny_benchmark(), "choice", score_memory_mb=0)
    assert kept.map(kept.evaluate, population) == none.map(none.evaluate, population)
    assert kept.evaluate.func.state.scorer.layers_saved > 0 == none.evaluate.func.state.scorer.layers_saved


def test_the_head_runs_only_at_scored_positions():
    sources = [tiny_model("llama", 1), tiny_model("llama", 2)]
    toolbox = make_toolbox(sources, tiny_benchmark(), "choice")
    shapes = []
    head = toolbox.evaluate.func.state.engine.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
    toolbox.evaluate([0, 1, 0, 1, 0])
    handle.remove()
    labeled = int((torch.as_tensor(tiny_benchmark()["labels"])[:, 1:] != -100).sum())
    assert shapes == [(1, labeled, 64)]


def test_the_evaluator_pickles_small_whatever_the_sources_size():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=4, max_position_embeddings=64)
    big = [LlamaForCausalLM(config).eval() for _ in range(2)]
    assert sum(p.numel() for p in big[0].parameters()) * 4 > 12 * 2**20
    toolbox = make_toolbox(big, tiny_benchmark(), "choice")
    assert len(pickle.dumps(toolbox.evaluate)) < 2**20
    assert len(pickle.dumps(toolbox.evaluate.func)) < 2**20
    assert len(pickle.dumps(toolbox.map)) < 2**20


def test_a_process_drops_its_state_with_the_evaluator():
    toolbox = make_toolbox([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), "choice")
    token = toolbox.evaluate.func.token
    toolbox.evaluate([0] * 5)
    assert token in evaluation_module._STATES
    del toolbox
    gc.collect()
    assert token not in evaluation_module._STATES and token not in evaluation_module._LOCAL


@pytest.mark.slow  # starts processes
def test_each_worker_receives_the_benchmark_once(tmp_path):
    pool = PoolMap(2)
    try:
        ga = LLMMergeGA([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), population_size=8,
                        max_generations=3, seed=0, map=pool)
        ga.run()
    finally:
        pool.close()
    loads = ga.cached_map.data_loads
    assert len(loads) == 2 and set(loads.values()) == {1}, loads


def test_workers_score_a_pool_of_a_model_object_and_a_folder_as_this_process_does(tmp_path):
    tiny_model("llama", 2).save_pretrained(tmp_path / "m2")
    sources = [tiny_model("llama", 1), tmp_path / "m2"]
    serial = make_toolbox(sources, tiny_benchmark(), "choice")
    genomes = [serial.pure(source=k) for k in (0, 1)]
    workers = PoolMap(1)
    try:
        distributed = make_toolbox(sources, tiny_benchmark(), "choice", base_map=workers)
        assert distributed.map(distributed.evaluate, genomes) == serial.map(serial.evaluate, genomes)
    finally:
        workers.close()


EA_SIMPLE = HELPERS / "scoop_easimple.py"


def test_easimple_with_futures_map_under_scoop_matches_the_serial_run(tmp_path):
    for path, seed in ((tmp_path / "m1", 1), (tmp_path / "m2", 2)):
        tiny_model("llama", seed).save_pretrained(path)
    torch.save(tiny_benchmark(), tmp_path / "bench.pt")
    args = [str(tmp_path / "m1"), str(tmp_path / "m2"), str(tmp_path / "bench.pt")]
    subprocess.run([sys.executable, "-m", "scoop", "-n", "2", str(EA_SIMPLE), *args, str(tmp_path / "scoop.json")],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, str(EA_SIMPLE), *args, str(tmp_path / "serial.json"), "--serial"],
                   check=True, capture_output=True)
    distributed = json.loads((tmp_path / "scoop.json").read_text())
    serial = json.loads((tmp_path / "serial.json").read_text())
    assert distributed["halloffame"] == serial["halloffame"]
    assert len(distributed["processes"]) == 2 and distributed["task_bytes"] < 2**20
    fitness = [values for _, values in serial["halloffame"]]
    assert distributed["rescored"] == serial["rescored"] == [fitness, fitness]


def test_tools_compose(tmp_path):
    toolbox = make_toolbox([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), "blend")
    hall = tools.HallOfFame(2)
    algorithms.eaMuPlusLambda(toolbox.population(n=4), toolbox, mu=4, lambda_=4, cxpb=0.5, mutpb=0.5, ngen=2,
                              halloffame=hall, verbose=False)
    assert len(hall) == 2


def test_temporary_files_lie_in_a_folder_of_this_users_alone(tmp_path, monkeypatch):
    import os
    import tempfile

    from deap_llmmerge import LLMMergeError
    from deap_llmmerge.distributed.private_temp import private_temp_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = private_temp_dir()
    assert folder.parent == tmp_path and folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)
    with pytest.raises(LLMMergeError, match="not a folder of this user's alone"):
        private_temp_dir()
    folder.rmdir()
    os.symlink(tmp_path / "elsewhere", folder)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    with pytest.raises(LLMMergeError, match="not a folder of this user's alone"):
        private_temp_dir()


def test_a_worker_refuses_a_transfer_file_that_does_not_hold_the_runs_benchmark(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    toolbox = make_toolbox([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), "choice")
    evaluator = toolbox.evaluate.func
    evaluator.share()
    ref = next(iter(evaluator.data_refs.values()))
    assert Path(ref.path).parent.parent == tmp_path
    torch.save(tiny_benchmark(seed=5), ref.path)  # another benchmark at the file's name
    monkeypatch.setattr(evaluation_module, "_DATA", {})
    with pytest.raises(BenchmarkDataError, match="does not hold the run's benchmark"):
        evaluation_module._fetch(ref)
