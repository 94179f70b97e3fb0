"""Choosing the training device: `auto` is CUDA when present, with a warning when it is not."""

from __future__ import annotations

import sys

import torch


class DeviceError(ValueError):
    """A device that was asked for and is not here."""


def resolve_device(name: str, *, warn: bool = True) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if warn:
            print("warning: no CUDA GPU found; training on the CPU (correct, but about 50x slower)", file=sys.stderr)
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} asked for, but PyTorch sees no CUDA GPU (use --device auto or cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"unknown device {name!r}; choose auto, cuda or cpu")
    return torch.device(name)
