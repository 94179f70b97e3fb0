"""Checkpoint files: atomic writes, and reads that refuse damaged or untrusted files."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from agents.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint


class CreatesFileWhenUnpickled:
    """A pickle payload with code in it: unpickling calls open(path, "w"), creating the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def payload() -> dict[str, object]:
    return {"weights": torch.arange(100_000, dtype=torch.float32), "position": {"step": 3}}


def test_round_trip(tmp_path):
    save_checkpoint(tmp_path / "a.pt", payload())
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(loaded["weights"], payload()["weights"]) and loaded["position"] == {"step": 3}


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, payload())
    with pytest.raises(TypeError, match="cannot pickle"):  # fails part-way through the write
        save_checkpoint(path, {"weights": torch.zeros(10), "not picklable": threading.Lock()})
    assert torch.equal(load_checkpoint(path)["weights"], payload()["weights"])
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_written_file_is_readable_as_umask_allows(tmp_path):
    save_checkpoint(tmp_path / "a.pt", payload())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_code_in_a_torch_archive_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "created-by-payload"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "position": {}, "extra": CreatesFileWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()
    # The payload is live: an unsafe load does create the file (so the check above means something).
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_raw_pickle_is_refused_unread(tmp_path):
    marker = tmp_path / "created-by-payload"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(CreatesFileWhenUnpickled(marker)))
    with pytest.raises(CheckpointError, match="truncated, or not a checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_flipped_bytes_fail_the_crc_check(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(path, payload())
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the tensor data, which torch.load itself never checks
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(path, payload())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated, or not a checkpoint"):
        load_checkpoint(path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "a.pt"
    torch.save({"weights": torch.zeros(3)}, path)  # a torch archive, but not ours
    with pytest.raises(CheckpointError, match="not an ewc-atari checkpoint"):
        load_checkpoint(path)
