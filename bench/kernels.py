"""Kernels per update, counted with torch.profiler over a few updates of each learner, at the end of
the run: once a CUDA profiler has run, CUPTI can stay loaded and slow later work, and a CUDA graph
captured before the profiler's first use has been known to fail under it on older CUDA versions;
last, a failure costs only the counts (it is recorded in their place).

On CUDA an update is bound by launches: each kernel costs the host a few microseconds to launch,
about as long as the H200 takes to run it. Counted there: the events the profiler records on the GPU
(kernels, and the copies and fills the device runs), and beside them the host's launch calls (CUDA
runtime calls named ...Launch...: one per kernel in eager mode, one per replay of a CUDA graph). On a
CPU nothing is launched; counted there: the aten operators at the top level, each one the host
dispatches itself (not those nested inside another, such as a convolution's own sub-operators):
what a compiled update fuses away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from bench.build import synchronize

COUNTED = {
    "cuda": "events on the GPU (kernels, device copies and fills) per update; host launch calls beside",
    "cpu": "aten operators at the top level (not nested in another aten operator) per update",
}
"""What `count_kernels` counts, by device type (the report says it)."""


def add_kernel_counts(
    figures: dict, updates: dict[tuple[str, str], Callable[[], object]], count: int, device: torch.device
) -> None:
    """Count the kernels of each (mode, source)'s update over `count` updates, into a learner-only
    section's figures (bench/parts.py `learner_figures`)."""
    figures["kernels_counted"], figures["kernel_updates"] = COUNTED[device.type], count
    for (mode, source), update in updates.items():
        try:
            figures[mode][source].update(count_kernels(update, count, device))
        except RuntimeError as error:
            message = str(error).strip().splitlines()
            figures[mode][source].update({"kernels_per_update": None, "kernels_error": message[0] if message else repr(error)})


def count_kernels(update: Callable[[], object], updates: int, device: torch.device) -> dict[str, float]:
    """Run `update()` `updates` times under the profiler; what they launched, per update (see COUNTED)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as profiler:
        for _ in range(updates):
            update()
        synchronize(device)
    return tally(profiler.events(), updates, device.type == "cuda")


def tally(events: Iterable, updates: int, cuda: bool) -> dict[str, float]:
    """Per update: on CUDA, the events on the device and the host's launch calls; on a CPU, the aten
    operators at the top level. `events` are the profiler's (name, device_type, cpu_parent)."""
    events = list(events)
    if cuda:
        kernels = sum(event.device_type == DeviceType.CUDA for event in events)
        launches = sum(event.device_type == DeviceType.CPU and "Launch" in event.name for event in events)
        return {"kernels_per_update": kernels / updates, "launches_per_update": launches / updates}
    return {"kernels_per_update": sum(top_level_aten(event) for event in events) / updates}


def top_level_aten(event) -> bool:
    """An aten operator with no aten operator above it (backward operators sit under autograd's own events)."""
    if not event.name.startswith("aten::"):
        return False
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True
