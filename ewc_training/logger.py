"""Where the trainer's scalars go: TensorBoard for runs, memory for the benchmark and tests.

The trainer is given a logger; it never builds one. Both kinds start with `start(purge_step)`: after a
resume, what a crashed process logged past the checkpoint is hidden (TensorBoard's purge_step).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Protocol

from torch.utils.tensorboard import SummaryWriter


class Logger(Protocol):
    def start(self, purge_step: int | None = None) -> None: ...
    def scalar(self, tag: str, value: float, step: int) -> None: ...
    def config(self, flat: dict[str, object]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class TensorBoardLogger:
    """Event files in the run directory (`tensorboard --logdir runs`)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.writer: SummaryWriter | None = None

    def start(self, purge_step: int | None = None) -> None:
        self.writer = SummaryWriter(str(self.run_dir), purge_step=purge_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def config(self, flat: dict[str, object]) -> None:
        """The resolved config as a text table and as TensorBoard hparams (to compare runs)."""
        from torch.utils.tensorboard.summary import hparams

        rows = "\n".join(f"|{key}|{value}|" for key, value in flat.items())
        self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")
        values = {key: (value if isinstance(value, (int, float, str, bool)) else str(value)) for key, value in flat.items()}
        for summary in hparams(values, {"eval/mean_hns": float("nan")}):
            self.writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class MemoryLogger:
    """Keeps every scalar as tag -> [(step, value)], for the benchmark and tests."""

    def __init__(self):
        self.scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.flat_config: dict[str, object] = {}

    def start(self, purge_step: int | None = None) -> None:
        if purge_step is not None:
            for tag, points in self.scalars.items():
                self.scalars[tag] = [(step, value) for step, value in points if step < purge_step]

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag].append((step, float(value)))

    def config(self, flat: dict[str, object]) -> None:
        self.flat_config = dict(flat)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
