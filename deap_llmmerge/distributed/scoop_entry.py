"""Entry script for SCOOP: ``python -m scoop -n N $(deap-llmmerge scoop-entry) run CONFIG.yaml ...``.

SCOOP imports this file in every worker (one torch thread each) and runs ``main`` in the root only,
with candidates scored through ``scoop.futures.map``. SCOOP ignores the script's exit status, so the run
reports how it ended through the status file that ``deap-llmmerge run --workers N`` reads.
"""

import sys

from deap_llmmerge.distributed.scoop import scoop_map
from deap_llmmerge.distributed.worker import init_worker

init_worker()

if __name__ == "__main__":
    from deap_llmmerge.run.cli import main

    main(sys.argv[1:], base_map=scoop_map)
