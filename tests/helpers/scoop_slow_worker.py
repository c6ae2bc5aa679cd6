"""Run by ``python -m scoop -n 2``: the root's tasks are quick, the other worker's slow. Prints the pids that
returned results; SCOOP's own warnings go to stderr."""

import os
import time

import scoop
from scoop import futures

import deap_llmmerge  # noqa: F401  (imported under SCOOP, it makes the root wait before re-sending a task)


def task(i: int) -> int:
    time.sleep(0.05 if scoop.IS_ORIGIN else 6)
    return os.getpid()


if __name__ == "__main__":
    print(len(set(futures.map(task, range(4)))))
