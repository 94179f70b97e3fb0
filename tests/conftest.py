"""Shared test helpers: one torch thread, and the real `train.py` command line as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
"""Training subprocesses use one torch thread: CI has 2 cores, shared with the emulator threads,
and two torch threads that wait for each other on a busy machine were measured ~70x slower."""


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests feed the network small batches: one thread is as fast and never stalls on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def deterministic_cuda():
    """Same kernels, same sums: without this, cuDNN's choices alone make runs differ slightly."""
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = True, False, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = flags


def run_train(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python train.py ARGS` from the project root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=timeout
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
