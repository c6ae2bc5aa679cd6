"""Which torch device a process scores on."""

from __future__ import annotations

import bisect
import os

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "available_memory", "mapped_from_file", "out_of_memory",
           "release_cached_memory"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``cpu`` / ``cuda`` / ``cuda:1``; a CUDA device that is not there is an error, not a fallback."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device (use cpu, cuda or cuda:N)") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            visible = torch.cuda.device_count()
            raise ConfigError(f"device {device!r} requested but only {visible} CUDA device(s) are visible")
    elif resolved.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported (use cpu, cuda or cuda:N)")
    return resolved


def available_memory(device: torch.device) -> int:
    """Free memory of ``device`` in bytes (host RAM for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def mapped_from_file(tensors: list[torch.Tensor]) -> list[bool]:
    """Per tensor, whether its memory is a private mapping of a file (a model loaded from safetensors):
    writing there first copies each page from the file. Read from /proc/self/maps (Linux; elsewhere every
    answer is False)."""
    try:
        with open("/proc/self/maps") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return [False] * len(tensors)
    ranges = []
    for line in lines:  # address perms offset device inode [path]; inode 0: anonymous memory
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0" and fields[1].endswith("p"):
            low, high = (int(address, 16) for address in fields[0].split("-"))
            ranges.append((low, high))
    ranges.sort()
    lows = [low for low, _ in ranges]

    def mapped(tensor: torch.Tensor) -> bool:
        at = bisect.bisect_right(lows, tensor.data_ptr()) - 1
        return tensor.device.type == "cpu" and at >= 0 and tensor.data_ptr() < ranges[at][1]

    return [mapped(tensor) for tensor in tensors]


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an allocation failed: a GPU's out-of-memory error, or the CPU allocator's (a
    RuntimeError from torch, a MemoryError from Python)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)  # torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory"), Apple's MPS backend
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "backend out of memory" in text)


def release_cached_memory() -> None:
    """Give the memory torch keeps cached on the GPU back before a retry with smaller batches."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
