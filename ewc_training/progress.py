"""What the loop reports while a game trains: episode scores, losses, steps/s, retention, a progress bar.

Update statistics stay on the device and are summed there; reading them (one host synchronisation)
happens only every `run.log_every` agent steps.
"""

from __future__ import annotations

import sys
import time

import torch
from tqdm import tqdm

from agents.dqn import UpdateStats
from agents.ewc.probes import ProbeSet, retention
from agents.network import QNetwork
from ewc_training.logger import Logger
from ewc_training.schema import Position


class StatsAccumulator:
    """Sums update statistics on the device; `read()` is the only host synchronisation."""

    def __init__(self):
        self.sums: torch.Tensor | None = None
        self.count = 0

    def add(self, stats: UpdateStats) -> None:
        """Add one update's statistics to the sums; the first is cloned, so that the sums never
        write into an update's own tensor."""
        if self.sums is None:
            self.sums = stats.values.clone()
        else:
            self.sums.add_(stats.values)
        self.count += 1

    def read(self) -> dict[str, float]:
        totals = self.sums.tolist() if self.sums is not None else []
        means = {name: total / self.count for name, total in zip(UpdateStats.NAMES, totals)}
        self.sums, self.count = None, 0
        return means


ACTING_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, acting at {rate_fmt}: no ETA until learning starts{postfix}]"
"""The bar before a game's first update. Its rate is the emulators' alone, ~15x what the game runs at
once every few agent steps also make an update: an ETA from it would promise a small part of the time.
From the first update on, tqdm's own format gives the ETA, from its smoothed recent rate."""


class Progress:
    """One game's reporting: TensorBoard tags under charts/, losses/ and retention/, and a tqdm bar."""

    def __init__(
        self,
        logger: Logger,
        game: str,
        position: Position,
        num_games: int,
        steps_per_game: int,
        cells: int = 1,
        shows_bar: bool = True,
    ):
        """`cells`: the population this run trains in (its bar then gives steps/s per cell and summed);
        `shows_bar`: False for every cell but one of a population, whose bar speaks for all."""
        self.logger = logger
        self.cells = cells
        self.shows_bar = shows_bar
        self.game = game
        self.position = position
        self.stats = StatsAccumulator()
        self.last_score: float | None = None
        self.updating = False
        self.clock = (time.perf_counter(), position.total_steps)
        self.bar = tqdm(
            total=steps_per_game,
            initial=position.step_in_game,
            unit="step",
            unit_scale=True,
            desc=f"[{position.game_index + 1}/{num_games}] {game}",
            mininterval=2.0,
            dynamic_ncols=True,
            bar_format=ACTING_FORMAT,
            disable=not shows_bar,
        )

    def add_update(self, stats: UpdateStats) -> None:
        self.stats.add(stats)

    def episodes_ended(self, finished: list[tuple[float, int]]) -> None:
        for score, length in finished:
            self.logger.scalar(f"charts/{self.game}/episodic_return", score, self.position.total_steps)
            self.logger.scalar(f"charts/{self.game}/episodic_length", length, self.position.total_steps)
            self.last_score = score

    def advance(self, steps: int) -> None:
        self.bar.update(steps)

    def postfix(self, steps_per_second: float) -> dict[str, str]:
        """The bar's figures: steps/s, and the return of the last finished episode once there is one."""
        shown = {"sps": f"{steps_per_second:,.0f}"}
        if self.cells > 1:
            shown = {"sps/cell": f"{steps_per_second:,.0f}", f"sps x{self.cells} cells": f"{steps_per_second * self.cells:,.0f}"}
        if self.last_score is not None:
            shown["last_return"] = f"{self.last_score:g}"
        return shown

    def learning_starts(self, transitions: int) -> None:
        """Say once, at this game's first update, that it now learns: steps/s falls then by an order
        of magnitude (every few agent steps also make an update), which reads like a hang unannounced.
        A resumed game says it resumes learning."""
        if self.updating:
            return
        self.updating = True
        self.bar.bar_format = None  # tqdm's own, with the ETA
        if not self.shows_bar:
            return
        verb = "starts" if self.position.updates_in_game == 0 else "resumes"
        tqdm.write(
            f"{self.game}: learning {verb} at step {self.position.step_in_game:,}: the replay holds "
            f"{transitions:,} transitions; updates begin now, so expect fewer agent steps/s (the ETA shows once "
            "the rate has settled)",
            file=sys.stderr,
        )

    def log(self, epsilon: float) -> dict[str, float] | None:
        """Steps/s, epsilon and the mean losses since the last log; returns those means (None if no update)."""
        step = self.position.total_steps
        now = time.perf_counter()
        steps_per_second = (step - self.clock[1]) / max(now - self.clock[0], 1e-9)
        self.clock = (now, step)
        self.logger.scalar("charts/SPS", steps_per_second, step)
        self.logger.scalar(f"charts/{self.game}/epsilon", epsilon, step)
        self.bar.set_postfix(self.postfix(steps_per_second), refresh=False)
        if not self.stats.count:
            return None
        means = self.stats.read()
        self.logger.scalar(f"losses/{self.game}/td_loss", means["td_loss"], step)
        self.logger.scalar(f"losses/{self.game}/q_values", means["q_mean"], step)
        self.logger.scalar(f"losses/{self.game}/consolidation", means["consolidation"], step)
        ratio = means["consolidation"] / means["td_loss"] if means["td_loss"] > 0 else 0.0
        self.logger.scalar(f"losses/{self.game}/consolidation_to_td_ratio", ratio, step)
        return means

    def log_retention(self, network: QNetwork, probes: dict[str, ProbeSet]) -> None:
        """retention/<game>/... for every earlier game with a probe set (not the one training now)."""
        for probed_game, probe in probes.items():
            if probed_game != self.game:
                for name, value in retention(network, probe, probed_game).items():
                    self.logger.scalar(f"retention/{probed_game}/{name}", value, self.position.total_steps)

    def close(self) -> None:
        self.bar.close()
