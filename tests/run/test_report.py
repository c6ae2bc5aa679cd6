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
