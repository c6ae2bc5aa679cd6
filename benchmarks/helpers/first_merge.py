"""Time the first merge of a fresh process: map the sources, build the skeleton (untimed), merge once.

    python first_merge.py METHOD MODELS_DIR     (MODELS_DIR holds m0, the base, and m1, m2)
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_merge_methods import plan_for  # noqa: E402

from deap_llmmerge import SourcePool  # noqa: E402
from deap_llmmerge.models.engine import MergeEngine  # noqa: E402

torch.set_num_threads(1)
method, folder = sys.argv[1], Path(sys.argv[2])
pool = SourcePool([folder / "m1", folder / "m2"], base=folder / "m0")
engine = MergeEngine(pool, pool.new_skeleton())
plan = plan_for(method, pool)
started = time.perf_counter()
engine.apply(plan)
print(time.perf_counter() - started)
