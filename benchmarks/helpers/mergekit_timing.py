"""Run inside mergekit's own venv: time ``mergekit.merge.run_merge`` on each config, print JSON seconds.

    python mergekit_timing.py OUT_DIR CONFIG [CONFIG ...]
"""

import json
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions

torch.set_num_threads(1)
out = Path(sys.argv[1])
seconds = {}
for config in sys.argv[2:]:
    with open(config) as handle:
        merge = MergeConfiguration.model_validate(yaml.safe_load(handle))
    started = time.perf_counter()
    run_merge(merge, str(out / Path(config).stem), options=MergeOptions(copy_tokenizer=False, lazy_unpickle=False))
    seconds[Path(config).stem] = time.perf_counter() - started
    shutil.rmtree(out / Path(config).stem)  # (its pages not written back during the next timing)
print(json.dumps(seconds))
