"""Host arrays reach the device unchanged, whether they are copied through pinned buffers (CUDA) or
used in place (CPU), also when a buffer is reused while earlier copies are still queued."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ewc_training.upload import Upload

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_on_a_cpu_arrays_are_used_as_they_are():
    upload = Upload(torch.device("cpu"))
    observations = np.random.default_rng(0).integers(0, 256, (4, 4, 84, 84), dtype=np.uint8)
    tensor = upload("observations", observations)
    assert tensor.device.type == "cpu" and tensor.dtype == torch.uint8
    assert np.array_equal(tensor.numpy(), observations)
    assert torch.equal(upload("ends", np.array([True, False])), torch.tensor([True, False]))


@pytest.mark.cuda
@needs_cuda
def test_copies_queued_behind_slow_gpu_work_each_carry_their_own_step():
    """Each upload reuses one pinned buffer; with the GPU kept busy (so that copies queue up behind
    it) every device tensor still holds its own step's array, and a new shape gets a new buffer."""
    device = torch.device("cuda")
    upload = Upload(device)
    rng = np.random.default_rng(1)
    big = torch.randn(4096, 4096, device=device)
    sent, received = [], []
    for step in range(20):
        big = big @ big / 64  # a few ms of GPU work ahead of the copy
        shape = (8, 4, 84, 84) if step < 10 else (16, 4, 84, 84)
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        sent.append(array)
        received.append(upload("observations", array).clone())  # cloned on the device, in queue order
    torch.cuda.synchronize()
    assert all(np.array_equal(got.cpu().numpy(), want) for got, want in zip(received, sent))
