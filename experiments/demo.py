"""`make demo`: merge two small expert models with the genetic algorithm and show that the merge wins.

Steps: train (or reuse) a base and two experts fine-tuned from it on different tasks; write a mixed
benchmark and a held-out set; run ``deap-llmmerge run`` on a config; print each source's, the uniform
average's and the best merge's accuracy and loss on the fitness data and on the held-out set.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))

from experts import build_experts, mixed_benchmark  # noqa: E402

from deap_llmmerge import BenchmarkData, GenomeSpace  # noqa: E402
from deap_llmmerge.genomes.blend import decodeBlend  # noqa: E402
from deap_llmmerge.models.engine import MergeEngine  # noqa: E402
from deap_llmmerge.models.sources import SourcePool  # noqa: E402
from deap_llmmerge.run.cli import main as cli_main  # noqa: E402
from deap_llmmerge.scoring.metrics import calculate_accuracy, calculate_loss, score  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "demo"

GA_SETTINGS = {"population_size": 16, "max_generations": 12, "crossover_rate": 0.8, "mutation_rate": 0.15,
               "elitism_rate": 0.125, "seed": 0}


def write_inputs(work: Path) -> tuple[Path, dict[str, Path]]:
    """Experts, fitness data, held-out data and the run config; returns (config, model paths)."""
    models = build_experts(CACHE / "models")
    work.mkdir(parents=True, exist_ok=True)
    torch.save(mixed_benchmark(100, seed=10), work / "benchmark.pt")
    torch.save(mixed_benchmark(250, seed=20), work / "heldout.pt")
    config = {
        "models": [{"path": str(models["letters-expert"]), "name": "letters-expert"},
                   {"path": str(models["digits-expert"]), "name": "digits-expert"}],
        "benchmark": "benchmark.pt",
        "validation": "heldout.pt",
        "genome": "choice",
        "ga": GA_SETTINGS,
        "device": "cpu",
        "batch_size": 100,
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work / "config.yaml", models


def table(rows: list[tuple[str, torch.nn.Module]], datasets: dict[str, BenchmarkData]) -> str:
    metrics = (calculate_accuracy, calculate_loss)
    header = f"{'model':<22}" + "".join(f"{name + ' acc':>15}{name + ' loss':>15}" for name in datasets)
    lines = [header, "-" * len(header)]
    for label, model in rows:
        cells = "".join(f"{acc:>15.3f}{loss:>15.3f}"
                        for acc, loss in (score(model, data, metrics, 128) for data in datasets.values()))
        lines.append(f"{label:<22}{cells}")
    return "\n".join(lines)


def main() -> int:
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    started = time.time()
    work = CACHE / "inputs"
    config, models = write_inputs(work)
    print(f"experts ready in {time.time() - started:.0f} s: {', '.join(str(p) for p in models.values())}")
    output = ROOT / "runs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"evolving their merge: deap-llmmerge run {config} (population {GA_SETTINGS['population_size']}, "
          f"{GA_SETTINGS['max_generations']} generations) ...", flush=True)
    status = cli_main(["--quiet", "run", str(config), "--output", str(output)])
    if status != 0:
        return status

    pool = SourcePool([models["letters-expert"], models["digits-expert"]])
    uniform = decodeBlend([0.5] * (2 * len(pool.part_names)), GenomeSpace(tuple(pool.part_names), 2))
    rows = [("letters-expert", AutoModelForCausalLM.from_pretrained(models["letters-expert"]).eval()),
            ("digits-expert", AutoModelForCausalLM.from_pretrained(models["digits-expert"]).eval()),
            ("uniform average", MergeEngine(pool, pool.new_skeleton()).apply(uniform).eval()),
            ("best merge (GA)", AutoModelForCausalLM.from_pretrained(output / "best").eval())]
    datasets = {"fitness": BenchmarkData(**torch.load(work / "benchmark.pt")),
                "held-out": BenchmarkData(**torch.load(work / "heldout.pt"))}
    print()
    print(table(rows, datasets))
    cli_main(["--quiet", "report", str(output)])
    print(f"\nrun output: {output} (best/, recipe.json, logbook.csv, checkpoint.json, report/*.png); "
          f"total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
