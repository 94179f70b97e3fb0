"""The benchmark's settings: how long each measurement runs, and the training config it measures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ewc_training.config import Config

PIPELINE_TARGET = 0.8
"""End to end must reach this share of min(env only, 4 x learner only): the pipeline check."""
FISHER_REFERENCE_SAMPLES = 3_200
"""The EWC paper's Fisher: 100 minibatches of 32 replay states."""
LEARNER_ROUNDS = 4
"""Learner-only rounds per learner (alternating between learners); the fastest counts."""
PEER_TARGET = 1.5
"""The peer comparison's target, on a CPU: the faster update mode (`compiled`) at >= 1.5x eager float32
updates/s, and train.py's loop at >= 1.5x the agent steps/s of CleanRL's loop structure, for the Atari
and the MinAtar network (medians of the rounds' ratios)."""
MINATAR_GAME = "minatar:breakout"
"""The MinAtar side of the peer comparison (any MinAtar game costs the same per update)."""


@dataclass(frozen=True)
class Settings:
    """How much of each measurement to run; `for_device` picks them."""

    env_counts: tuple[int, ...]
    """num_envs values of the environment-only sweep (the end-to-end num_envs is always included)."""
    env_seconds: float
    """Seconds per environment-only point (each is measured twice; the faster counts)."""
    num_envs: int
    """Emulators of the end-to-end training loop."""
    end_to_end_steps: int
    cleanrl_steps: int
    end_to_end_rounds: int
    """Rounds of env only, learner only, training loop and CleanRL-structured loop, back to back; the end-to-end
    figures and ratios are medians over rounds."""
    learner_updates: int
    """Updates per learner-only round (LEARNER_ROUNDS of them per learner, and one per end-to-end round)."""
    fisher_samples: int
    replay_transitions: int
    """Capacity of the replay allocated to measure bytes per transition (and device memory)."""
    minatar_steps: int = 8_000
    """Agent steps of each MinAtar training-loop round (CleanRL-structured rounds take half)."""
    minatar_learner_updates: int = 200
    """Updates per MinAtar learner-only round (LEARNER_ROUNDS of them per update mode)."""
    game: str = "pong"

    @staticmethod
    def for_device(device: torch.device, quick: bool) -> Settings:
        """Standard settings on CUDA (a 16-core GPU host); small ones on a CPU (8 minutes on 2 cores, 15 when they are busy)."""
        if device.type == "cuda":
            settings = Settings(
                env_counts=(1, 2, 4, 8, 16, 32),
                env_seconds=1.5,
                num_envs=16,
                end_to_end_steps=60_000,
                cleanrl_steps=3_000,
                end_to_end_rounds=3,
                learner_updates=250,
                fisher_samples=FISHER_REFERENCE_SAMPLES,
                replay_transitions=1_000_000,
            )
        else:
            settings = Settings(
                env_counts=(1, 2, 4, 8, 16),
                env_seconds=1.5,
                num_envs=8,
                end_to_end_steps=2_000,
                cleanrl_steps=1_000,
                end_to_end_rounds=3,
                learner_updates=20,
                fisher_samples=128,
                replay_transitions=50_000,
            )
        if quick:
            settings = dataclasses.replace(
                settings,
                env_seconds=settings.env_seconds / 2,
                end_to_end_steps=settings.end_to_end_steps // 2,
                cleanrl_steps=settings.cleanrl_steps // 2,
                learner_updates=settings.learner_updates // 2,
                minatar_steps=settings.minatar_steps // 2,
                minatar_learner_updates=settings.minatar_learner_updates // 2,
                fisher_samples=max(64, settings.fisher_samples // 2),
            )
        return settings


def benchmark_config(settings: Settings) -> Config:
    """the training defaults, with learning from the first step on (so every step of the loop pays
    the full replay ratio) and logging often enough to time the loop's steady state."""
    config = Config()
    config.run.games = [settings.game]
    config.run.steps_per_game = settings.end_to_end_steps
    config.run.log_every = max(settings.num_envs, settings.end_to_end_steps // 5)
    config.run.checkpoint_every = 0
    config.env.num_envs = settings.num_envs
    config.agent.learning_starts = 0
    config.agent.update_mode = "auto"  # the CUDA-graph update on a GPU, as training uses by default
    return config


def minatar_config(settings: Settings) -> Config:
    """The benchmark's config on MinAtar: the MinAtar paper's network (configs/minatar.yaml), the
    same replay ratio, learning from the first step."""
    config = benchmark_config(settings)
    config.run.games = [MINATAR_GAME]
    config.run.steps_per_game = settings.minatar_steps
    config.run.log_every = max(settings.num_envs, settings.minatar_steps // 5)
    config.network.architecture = "minatar"
    return config
