"""What every worker process does first, and which GPU it takes."""

from __future__ import annotations

import fcntl
import os
import signal

import torch

from .private_temp import private_temp_dir

__all__ = ["init_worker", "worker_device", "THREADS_ENV"]

THREADS_ENV = "DEAP_LLMMERGE_THREADS"


def init_worker() -> None:
    """One torch thread per worker unless ``DEAP_LLMMERGE_THREADS`` says otherwise; no progress bars; Ctrl-C
    is the main process's to handle (it ends the workers)."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    hf_logging.disable_progress_bar()
    signal.signal(signal.SIGINT, signal.SIG_IGN)



def worker_device(device: torch.device, run_token: str) -> torch.device:
    """In a SCOOP worker, plain ``cuda`` means GPU ``i mod (visible GPUs)`` for the host's i-th worker."""
    import scoop

    if device.type != "cuda" or device.index is not None or not getattr(scoop, "IS_RUNNING", False):
        return device
    counter = private_temp_dir() / f"gpu-{run_token}"
    with open(counter, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        slot = len(handle.read())
        handle.write("x")
    return torch.device("cuda", slot % torch.cuda.device_count())
