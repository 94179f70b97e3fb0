"""Checkpoints: written atomically, read with `torch.load(weights_only=True)`.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts. Writing goes to a
temporary file in the same folder, which is flushed and fsynced, then renamed over the target:
a crash or kill -9 at any moment leaves either the old file or the new one, never half of one.
Reading with `weights_only=True` refuses pickles that would run code, so a checkpoint from a
stranger can be scored safely. `torch.load` does not check the CRC-32 that `torch.save` stores for
every record, so a file with flipped bytes would load silently; reading checks them first.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ewc_training.errors import first_line

FORMAT = "ewc-atari-checkpoint/1"
TEMPORARY_SUFFIX = ".tmp"
"""A write in progress is `.<name>.<random>.tmp` beside its target; one left by a kill is garbage."""


class CheckpointError(ValueError):
    """A file that cannot be used as a checkpoint; the message names it and says why."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file atomically: `write` fills a temporary file beside `path`, which is flushed,
    fsynced and renamed over `path`, then the folder is fsynced. Checkpoints and run.json use it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        os.chmod(descriptor, 0o666 & ~_umask())  # mkstemp makes it private; others may read a run's files
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda handle: torch.save({"format": FORMAT, **payload}, handle))


def compact(value: Any) -> Any:
    """`value` with every tensor that is a view of a larger one copied out: torch.save writes a view's
    whole storage, and a population's cell (agents/population.py) holds views of the (P, ...) tensors
    of every cell, which would make each of its checkpoints P times as large."""
    if isinstance(value, dict):
        return {key: compact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(compact(item) for item in value)
    if torch.is_tensor(value) and value.untyped_storage().nbytes() > value.numel() * value.element_size():
        return value.clone()
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False, verify: bool = True
) -> dict[str, Any]:
    """Read a checkpoint safely; every failure is a one-line CheckpointError naming the file.

    `mmap=True` leaves tensors in the file (on the CPU) until they are used: for a large file whose
    tensors are copied elsewhere once, or only a few small fields are read. `verify=False` skips the
    CRC pass over the whole file, for peeking at small fields of many large files.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint (not a whole torch.save archive); refused unread")
    if verify:
        _check_crcs(path)
    try:
        payload = torch.load(path, map_location="cpu" if mmap else map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        code = "it holds objects other than tensors and plain data (refused: loading it could run code)"
        reason = code if "weights_only" in str(error) else first_line(error)
        raise CheckpointError(f"{path}: not a safe checkpoint: {reason}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({first_line(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ewc-atari checkpoint")
    return payload


def _check_crcs(path: Path) -> None:
    """Compare every record of the archive with the CRC-32 written beside it (one read of the file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({error})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint (record {damaged} fails its CRC check)")
