"""Choosing the training device (`auto` is CUDA when present, with a warning when it is not), how
many CPU threads torch uses, and how much memory is free on the device."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


class DeviceError(ValueError):
    """A device that was asked for and is not here."""


def resolve_device(name: str, *, warn: bool = True) -> torch.device:
    """The device `name` asks for: auto, cuda, cuda:N or cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if warn:
            print(
                "warning: no CUDA GPU found; training on the CPU: correct, but slow (docs/performance.md)",
                file=sys.stderr,
            )
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} asked for, but PyTorch sees no CUDA GPU (use --device auto or cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"unknown device {name!r}; choose auto, cuda or cpu")
    return torch.device(name)


def configure_threads(requested: int | None, device: torch.device) -> str:
    """Set torch's intra-op CPU threads for this process; returns the line that says how many and why.

    `requested` (--threads) wins, then OMP_NUM_THREADS; otherwise a run on the CPU gets one thread,
    not torch's one per core. The batches here are small: two threads were 1.3-1.4x one on an idle
    2-core machine, and 5-6x slower than one as soon as anything else ran (their
    OpenMP threads spin waiting for each other; docs/performance.md has the figures). On a GPU
    torch's own default stands: its CPU threads do little there.
    """
    if requested is not None:
        torch.set_num_threads(requested)
        why = "--threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        why = "OMP_NUM_THREADS"
    elif device.type == "cpu":
        torch.set_num_threads(1)
        why = "the CPU default: one thread never stalls on a shared machine; --threads N for more"
    else:
        why = "torch's default"
    return f"torch CPU threads: {torch.get_num_threads()} ({why})"


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation on `device` can take: free GPU memory, or the host's MemAvailable
    (None where the host does not say, i.e. outside Linux)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None
