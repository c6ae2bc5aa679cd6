"""`deap-llmmerge report`: PNG plots of a finished run."""

from conftest import cli, write_run_config

from deap_llmmerge.run.report import pareto_front

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_draws_the_plots_of_a_finished_run_of_every_family(tmp_path, saved_llamas, family_case):
    config = write_run_config(tmp_path, saved_llamas, **family_case, ga={"population_size": 6, "max_generations": 2})
    assert cli("run", config, "--output", tmp_path / "out").returncode == 0
    result = cli("report", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    for name in ("objectives.png", "pareto.png", "sources.png"):
        path = tmp_path / "out" / "report" / name
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000, name


def test_report_of_a_folder_without_a_run_is_a_one_line_error(tmp_path):
    result = cli("report", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"deap-llmmerge: error: {tmp_path} holds no run to report on "
                                     "(no recipe.json or checkpoint.json)")


def test_pareto_front_keeps_only_undominated_points():
    points = [(0.9, 1.0), (0.8, 0.5), (0.8, 0.7), (0.5, 0.4), (0.4, 0.9), (0.9, 1.0)]
    assert pareto_front(points) == [(0.5, 0.4), (0.8, 0.5), (0.9, 1.0)]


def test_a_finished_run_says_item_by_item_whether_its_best_beats_each_source_and_seed(tmp_path, saved_llamas):
    import json

    import torch
    from conftest import tiny_benchmark, tiny_model

    torch.save(tiny_benchmark(seed=7), tmp_path / "held.pt")
    tiny_model("llama", 5).save_pretrained(tmp_path / "base")
    config = write_run_config(tmp_path, saved_llamas, genome="methods", method="ties", validation="held.pt",
                              base=str(tmp_path / "base"), ga={"population_size": 6, "max_generations": 2})
    assert cli("run", config, "--output", tmp_path / "out").returncode == 0
    paired = json.loads((tmp_path / "out" / "recipe.json").read_text())["paired"]
    for where in ("fitness", "validation"):
        rows = paired[where]
        against = {row["against"] for row in rows}
        assert {label.split(" (")[0] for label in against} <= {"source 0", "source 1", "ties at mergekit's defaults"}
        assert len(against) >= 2 and {row["measure"] for row in rows} == {"correct", "score"}
        for row in rows:
            low, high = row["ci95"]
            assert low <= row["mean"] <= high and row["better"] == (low > 0)
    assert cli("report", tmp_path / "out").returncode == 0
    table = (tmp_path / "out" / "report" / "paired.md").read_text()
    assert "## validation items" in table and "ties at mergekit's defaults" in table
