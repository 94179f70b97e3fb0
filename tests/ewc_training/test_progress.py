"""What the loop reports: the statistics accumulator (means since the last read, on the device), the
progress bar's figures and the notice when learning starts."""

from __future__ import annotations

import pytest
import torch

from agents.dqn import UpdateStats
from ewc_training.logger import MemoryLogger
from ewc_training.progress import Progress, StatsAccumulator
from ewc_training.schema import Position


def stats(td_loss: float, consolidation: float, q_mean: float) -> UpdateStats:
    return UpdateStats.of(torch.tensor(td_loss), torch.tensor(consolidation), torch.tensor(q_mean))


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
    reused.values.fill_(10.0)  # the graph's next replay
    accumulator.add(reused)
    assert accumulator.read() == pytest.approx({"td_loss": 5.5, "consolidation": 6.0, "q_mean": 6.5})
    assert reused.td_loss.item() == 10.0  # the update's own tensors are never written into


def test_the_bar_shows_a_return_only_once_an_episode_has_ended():
    progress = Progress(MemoryLogger(), "pong", Position(), 2, 1000)
    assert progress.postfix(1234.4) == {"sps": "1,234"}  # not last_return=None
    progress.episodes_ended([(-21.0, 812), (-19.5, 790)])
    assert progress.postfix(1234.4) == {"sps": "1,234", "last_return": "-19.5"}
    progress.close()


def test_learning_start_is_announced_once(capsys):
    position = Position(step_in_game=400)
    progress = Progress(MemoryLogger(), "breakout", position, 2, 1000)
    progress.learning_starts(400)
    position.step_in_game = 404
    progress.learning_starts(404)
    progress.close()
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("breakout: learning starts")]
    assert notices == [
        "breakout: learning starts at step 400: the replay holds 400 transitions; updates begin now, "
        "so expect fewer agent steps/s (the ETA shows once the rate has settled)"
    ]


def test_a_resumed_game_that_had_learned_says_learning_resumes(capsys):
    progress = Progress(MemoryLogger(), "pong", Position(step_in_game=640, updates_in_game=110), 2, 1000)
    progress.learning_starts(300)
    progress.close()
    assert "pong: learning resumes at step 640: the replay holds 300 transitions" in capsys.readouterr().err


def test_the_bar_gives_no_eta_while_only_acting_and_tqdms_once_learning(capsys):
    """Before the first update the rate is the emulators' alone: an ETA from it would be ~15x short."""
    progress = Progress(MemoryLogger(), "pong", Position(), 1, 1000)
    progress.advance(100)
    acting = str(progress.bar)
    assert "acting at" in acting and "no ETA until learning starts" in acting and "<" not in acting
    progress.learning_starts(100)
    progress.advance(100)
    learning = str(progress.bar)
    assert "no ETA" not in learning and "<" in learning  # tqdm's [elapsed<remaining, rate]
    progress.close()
