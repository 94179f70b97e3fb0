"""Memory: bytes per transition of the frame-once replay as allocated (and on CUDA as the allocator
saw it), and the peak host and GPU memory of the whole benchmark.
"""

from __future__ import annotations

import resource

import torch

from agents.replay import FrameReplay
from bench.build import synchronize
from bench.settings import Settings


def tensor_bytes(obj: object) -> int:
    return sum(value.nbytes for value in vars(obj).values() if isinstance(value, torch.Tensor))


def replay_figures(settings: Settings, device: torch.device) -> tuple[dict, FrameReplay]:
    """Bytes per transition of a FrameReplay as allocated (and, on CUDA, as the allocator saw it)."""
    synchronize(device)
    allocated_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    replay = FrameReplay(settings.replay_transitions, settings.num_envs, device)
    per_transition = tensor_bytes(replay) / replay.capacity
    figures = {
        "capacity": replay.capacity,
        "bytes_per_transition": per_transition,
        "gb_per_million_transitions": per_transition * 1e6 / 1e9,
    }
    if device.type == "cuda":
        figures["device_gb_allocated"] = (torch.cuda.memory_allocated(device) - allocated_before) / 1e9
    return figures, replay


def peak_memory(device: torch.device) -> dict:
    figures = {"peak_host_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}
    if device.type == "cuda":
        figures["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        figures["peak_gpu_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 1e9
    return figures
