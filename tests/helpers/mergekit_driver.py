"""Run inside mergekit's own virtual environment: ``python mergekit_driver.py CONFIG OUT [CONFIG OUT ...]``.

Builds each mergekit config with ``mergekit.merge.run_merge`` in this one process (mergekit-yaml, without its
start-up cost per config).
"""

import sys

import yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions

for config, out in zip(sys.argv[1::2], sys.argv[2::2]):
    with open(config) as handle:
        merge = MergeConfiguration.model_validate(yaml.safe_load(handle))
    run_merge(merge, out, options=MergeOptions(copy_tokenizer=False, lazy_unpickle=False))
