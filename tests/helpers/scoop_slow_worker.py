"""Run by ``python -m scoop -n 2``: the root's tasks are quick, the other worker's slow. Prints the pids that
returned results; SCOOP's own warnings go to stderr."""

import os
import time

import scoop
from scoop import futures

import deap_llmmerge  # noqa: F401  (imported under SCOOP, it makes the root wait before re-sending a task)


def ping(i: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def task(i: int) -> int:
    time.sleep(0.05 if scoop.IS_ORIGIN else 6)
    return os.getpid()


if __name__ == "__main__":
    for _ in range(60):  # until the other worker has started and takes tasks
        if len(set(futures.map(ping, range(8)))) == 2:
            break
    print(len(set(futures.map(task, range(4)))))
