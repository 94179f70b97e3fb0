"""The benchmark's settings: how long each measurement runs, what the whole run is planned to take,
and the training config it measures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ewc_training.config import Config

PIPELINE_TARGET = 0.8
"""The training loop end to end must reach this share of its bound, min(env only, 4 x learner only
with sampling), at every num_envs it runs at: the pipeline check."""
FISHER_REFERENCE_SAMPLES = 3_200
"""The EWC paper's Fisher: 100 minibatches of 32 replay states."""
LEARNERS_PER_SECTION = 5
"""Learners a learner-only section times: eager and the faster mode, each with sampling and on a ready
batch, and eager without the EWC penalty."""
PEER_TARGET = 1.5
"""The peer comparison's target, on a CPU: the faster update mode (`compiled`) at >= 1.5x eager float32
updates/s, and train.py's loop at >= 1.5x the agent steps/s of CleanRL's loop structure, for the Atari
and the MinAtar network (medians of the rounds' ratios)."""
MINATAR_GAME = "minatar:breakout"
"""The MinAtar side of the peer comparison (any MinAtar game costs the same per update)."""


@dataclass(frozen=True)
class Allowances:
    """Seconds planned for the work no deadline bounds: set-up that runs once, at its own speed. They
    are estimates; the JSON record holds each part's seconds beside its plan, to check them against."""

    start: float
    """Imports (the MinAtar package's too), the CUDA context, the replays (1M transitions allocated for
    their bytes, 8,192 random ones to sample from) and the process's exit."""
    emulator: float
    """Per emulator started (created and reset, one after another: about 0.17 s each on a busy
    2-core CPU), wherever one is: each num_envs of the environment-only runs once, every loop run."""
    learner: float
    """Per learner: built, its first update (a compile or a CUDA-graph capture) and 5 warm-up updates."""
    kernels: float
    """Per learner-only section (Atari, MinAtar): the profiler's start and a few profiled updates of each learner."""
    fisher: float
    """The timed Fisher (3,200 samples take about 0.35 s on an H200) and its first call."""
    loop: float
    """Per training-loop run besides its emulators, before its first update and after its window:
    trainer built, replay allocated, CUDA graph captured and checked against eager, emulators closed."""
    cleanrl: float
    """Per CleanRL-structured run besides its emulator, before its first update: a learner, a host replay."""


@dataclass(frozen=True)
class Settings:
    """How long each measurement runs; `for_device` picks them and `budget` adds them up.

    Loops and learners run for a fixed wall time per round, not a fixed count of steps, so the run
    takes about `budget()["total"]` seconds however fast or slow the machine turns out to be.
    """

    env_counts: tuple[int, ...]
    """num_envs values of the environment-only sweep."""
    env_seconds: float
    """Seconds per environment-only window (each sweep point is timed twice, the faster counts; each
    end-to-end round times one per loop count, on the same emulators)."""
    loop_env_counts: tuple[int, ...]
    """num_envs values the training loop runs at end to end, in every round."""
    num_envs: int
    """The standard count: the loop CleanRL's structure is set against, and the MinAtar loop's."""
    end_to_end_rounds: int
    """Rounds of env only, learner only, the training loop at each count and CleanRL's loop structure,
    back to back; the end-to-end figures and ratios are medians over rounds (of the MinAtar loops too)."""
    loop_seconds: float
    """Timed window of each training-loop run."""
    cleanrl_seconds: float
    """Timed window of each CleanRL-structured run."""
    warmup_seconds: float
    """Seconds every loop runs from its first update (compile or capture done) before its window opens."""
    learner_rounds: int
    """Learner-only rounds, alternating between the learners; each learner's fastest round counts."""
    learner_seconds: float
    """Seconds per learner per round (also the learner's run in each end-to-end round)."""
    kernel_updates: int
    """Updates of each learner the profiler counts kernels over."""
    fisher_samples: int
    replay_transitions: int
    """Capacity of the replay allocated to measure bytes per transition, and the length of each loop's
    game (so its replay has that capacity; no window reaches the game's end)."""
    minatar_loop_seconds: float
    minatar_cleanrl_seconds: float
    minatar_learner_seconds: float
    allowances: Allowances
    game: str = "pong"

    @staticmethod
    def for_device(device: torch.device, quick: bool) -> Settings:
        """Standard settings on CUDA (a 16-core GPU host, 150 s or less with start-up); small ones on a
        CPU (about 6½ minutes on 2 cores). `quick` halves every timed window."""
        if device.type == "cuda":
            settings = Settings(
                env_counts=(8, 16, 32),
                env_seconds=1.0,
                loop_env_counts=(8, 16, 32),
                num_envs=16,
                end_to_end_rounds=2,
                loop_seconds=2.5,
                cleanrl_seconds=2.5,
                warmup_seconds=0.5,
                learner_rounds=3,
                learner_seconds=0.3,
                kernel_updates=5,
                fisher_samples=FISHER_REFERENCE_SAMPLES,
                replay_transitions=1_000_000,
                minatar_loop_seconds=2.0,
                minatar_cleanrl_seconds=1.5,
                minatar_learner_seconds=0.2,
                allowances=Allowances(start=20.0, emulator=0.1, learner=1.0, kernels=3.0, fisher=1.5, loop=1.5, cleanrl=1.0),
            )
        else:
            settings = Settings(
                env_counts=(1, 2, 4, 8, 16),
                env_seconds=1.5,
                loop_env_counts=(8,),
                num_envs=8,
                end_to_end_rounds=3,
                loop_seconds=35.0,
                cleanrl_seconds=20.0,
                warmup_seconds=3.0,
                learner_rounds=4,
                learner_seconds=1.2,
                kernel_updates=2,
                fisher_samples=128,
                replay_transitions=50_000,
                minatar_loop_seconds=12.0,
                minatar_cleanrl_seconds=8.0,
                minatar_learner_seconds=0.4,
                allowances=Allowances(start=5.0, emulator=0.2, learner=1.5, kernels=4.0, fisher=4.0, loop=3.0, cleanrl=1.0),
            )
        if quick:
            half = {
                name: getattr(settings, name) / 2
                for name in (
                    "env_seconds",
                    "loop_seconds",
                    "cleanrl_seconds",
                    "warmup_seconds",
                    "learner_seconds",
                    "minatar_loop_seconds",
                    "minatar_cleanrl_seconds",
                    "minatar_learner_seconds",
                )
            }
            settings = dataclasses.replace(settings, **half, fisher_samples=max(64, settings.fisher_samples // 2))
        return settings

    @property
    def counts(self) -> list[int]:
        """Every num_envs of the loop, the standard one included."""
        return sorted(set(self.loop_env_counts) | {self.num_envs})

    def budget(self) -> dict[str, float]:
        """Planned seconds of each part of the run, in the order bench/measure.py runs them, and their
        total: every timed window, plus the allowance of each set-up that runs at its own speed."""
        a = self.allowances

        def started(counts) -> float:
            return a.emulator * sum(counts)

        def loop_run(num_envs: int, seconds: float) -> float:
            return a.loop + started([num_envs]) + self.warmup_seconds + seconds

        def cleanrl_run(seconds: float) -> float:
            return a.cleanrl + started([1]) + self.warmup_seconds + seconds

        def learners(seconds: float) -> float:
            return LEARNERS_PER_SECTION * (a.learner + self.learner_rounds * seconds)

        rounds, counts = self.end_to_end_rounds, self.counts
        loops = sum(loop_run(n, self.loop_seconds) for n in counts)
        minatar_loops = loop_run(self.num_envs, self.minatar_loop_seconds) + cleanrl_run(self.minatar_cleanrl_seconds)
        parts = {
            "start": a.start,
            "environment only": started(self.env_counts) + 2 * len(self.env_counts) * self.env_seconds,
            "learner only": learners(self.learner_seconds),
            "fisher": a.fisher,
            "end to end": a.learner
            + started(set(counts) - set(self.env_counts))
            + rounds * (len(counts) * self.env_seconds + loops + self.learner_seconds + cleanrl_run(self.cleanrl_seconds)),
            "minatar": learners(self.minatar_learner_seconds) + rounds * minatar_loops,
            "kernels": 2 * a.kernels,
        }
        return {**parts, "total": sum(parts.values())}


def benchmark_config(settings: Settings, num_envs: int | None = None) -> Config:
    """the training defaults, with learning from the first step on (so every step of the loop pays
    the full replay ratio), at `num_envs` emulators (default the standard count). The game is
    `replay_transitions` steps long: the loop is stopped by its timed window long before its end."""
    config = Config()
    config.run.games = [settings.game]
    config.run.steps_per_game = settings.replay_transitions
    config.run.checkpoint_every = 0
    config.env.num_envs = num_envs or settings.num_envs
    config.agent.learning_starts = 0
    config.agent.update_mode = "auto"  # the CUDA-graph update on a GPU, as training uses by default
    return config


def minatar_config(settings: Settings) -> Config:
    """The benchmark's config on MinAtar: the MinAtar paper's network (configs/minatar.yaml), the
    same replay ratio, learning from the first step."""
    config = benchmark_config(settings)
    config.run.games = [MINATAR_GAME]
    config.network.architecture = "minatar"
    return config
