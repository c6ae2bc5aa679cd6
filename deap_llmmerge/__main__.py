"""``python -m deap_llmmerge ...``: the ``deap-llmmerge`` command."""

import sys

from .run.cli import main

if __name__ == "__main__":  # a process pool's workers re-import the main module
    sys.exit(main())
