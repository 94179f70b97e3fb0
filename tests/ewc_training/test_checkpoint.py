import os
import pickle
import threading

import pytest
import torch

from agents.config import AgentConfig
from agents.dqn import DQNLearner
from agents.ewc.methods import make_consolidation
from agents.network import QNetwork
from agents.replay import Transitions
from ewc_training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def trained_learner(method="ewc"):
    torch.manual_seed(0)
    consolidation = make_consolidation(method, 10.0)
    learner = DQNLearner(QNetwork(modulated_games=["pong"]), AgentConfig(), consolidation)
    frames = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    batch = Transitions(frames, torch.randint(0, 18, (8,)), torch.randn(8), torch.ones(8), frames)
    learner.update(batch, "pong")
    fisher = {n: torch.rand_like(p) for n, p in learner.online.shared_parameters().items()}
    consolidation.end_game("pong", learner.online, lambda: fisher)
    learner.update(batch, "pong")
    return learner, batch


def test_round_trip_restores_network_optimizer_and_consolidation(tmp_path):
    learner, batch = trained_learner()
    path = tmp_path / "checkpoints" / "after_1_pong.pt"
    save_checkpoint(path, {"learner": learner.get_state(), "consolidation": learner.consolidation.get_state()})
    assert [p.name for p in path.parent.iterdir()] == ["after_1_pong.pt"]  # no temporary left behind

    payload = load_checkpoint(path)
    restored = DQNLearner(QNetwork(modulated_games=["pong"]), AgentConfig(), make_consolidation("ewc", 10.0))
    restored.set_state(payload["learner"])
    restored.consolidation.set_state(payload["consolidation"])
    assert torch.equal(restored.online(batch.s_tm1, "pong"), learner.online(batch.s_tm1, "pong"))
    assert restored.consolidation.penalty(restored.online).item() == learner.consolidation.penalty(learner.online).item()
    # the next update is identical too: Adam's moments and counters came back
    assert restored.update(batch, "pong").td_loss.item() == learner.update(batch, "pong").td_loss.item()
    assert torch.equal(restored.online.layers[0].weight, learner.online.layers[0].weight)


def test_overwrite_is_atomic(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"value": 1})
    save_checkpoint(path, {"value": 2})
    assert load_checkpoint(path)["value"] == 2


def test_truncated_and_foreign_files_give_one_line_errors(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"value": torch.zeros(1000)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:300])
    for bad, message in [(truncated, "unreadable"), (tmp_path / "missing.pt", "no such")]:
        with pytest.raises(CheckpointError, match=message) as error:
            load_checkpoint(bad)
        assert "\n" not in str(error.value)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="not an ewc-atari checkpoint"):
        load_checkpoint(plain)


class _CreatesFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        torch.save({"format": "ewc-atari-checkpoint/1", "payload": _CreatesFile(str(marker))}, handle)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not a safe checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()
    # The payload is live: an unsafe load does create the file (so the check above means something).
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_a_raw_pickle_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_CreatesFile(str(marker))))
    with pytest.raises(CheckpointError, match="not a whole torch.save archive"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"value": torch.arange(1000)})
    with pytest.raises(TypeError, match="cannot pickle"):  # fails part-way through the write
        save_checkpoint(path, {"value": torch.zeros(10), "not picklable": threading.Lock()})
    assert torch.equal(load_checkpoint(path)["value"], torch.arange(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_written_file_is_readable_as_umask_allows(tmp_path):
    save_checkpoint(tmp_path / "a.pt", {"value": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_flipped_bytes_fail_the_crc_check(tmp_path):
    """torch.load itself never checks the CRC-32 torch.save stores: flipped bytes would load."""
    path = tmp_path / "a.pt"
    save_checkpoint(path, {"value": torch.arange(100_000, dtype=torch.float32)})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the tensor data
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(data)
    assert torch.load(path, weights_only=True)["value"].sum() != torch.arange(100_000.0).sum()
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
