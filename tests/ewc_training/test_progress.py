"""The loop's statistics accumulator: means over the updates since the last read, on the device."""

from __future__ import annotations

import pytest
import torch

from agents.dqn import UpdateStats
from ewc_training.progress import StatsAccumulator


def stats(td_loss: float, consolidation: float, q_mean: float) -> UpdateStats:
    return UpdateStats(torch.tensor(td_loss), torch.tensor(consolidation), torch.tensor(q_mean))


def test_read_gives_the_means_since_the_last_read_and_starts_again():
    accumulator = StatsAccumulator()
    for values in [(1.0, 0.5, 2.0), (3.0, 1.5, 4.0), (2.0, 1.0, 0.0)]:
        accumulator.add(stats(*values))
    assert accumulator.read() == pytest.approx({"td_loss": 2.0, "consolidation": 1.0, "q_mean": 2.0})
    accumulator.add(stats(5.0, 0.0, 1.0))
    assert accumulator.read() == pytest.approx({"td_loss": 5.0, "consolidation": 0.0, "q_mean": 1.0})


def test_an_update_tensor_overwritten_later_does_not_change_the_sums():
    """A CUDA graph writes every replay's statistics into the same output tensors."""
    accumulator = StatsAccumulator()
    reused = stats(1.0, 2.0, 3.0)
    accumulator.add(reused)
    for tensor in vars(reused).values():
        tensor.fill_(10.0)  # the graph's next replay
    accumulator.add(reused)
    assert accumulator.read() == pytest.approx({"td_loss": 5.5, "consolidation": 6.0, "q_mean": 6.5})
    assert reused.td_loss.item() == 10.0  # the update's own tensors are never written into
