"""End to end: agent steps/s of the real training loop (`SequenceTrainer.train_game`) against
CleanRL's loop structure, in rounds that also time the env alone and the learner alone back to back,
so that every ratio is taken within one round and a machine that gets busier or quieter during the
benchmark does not bias it.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from agents.cuda_graph import resolve_update_mode
from agents.replay import FrameReplay
from bench.build import activate_penalty, make_learner
from bench.cleanrl import cleanrl_steps_per_second
from bench.parts import env_steps_per_second, seconds_per_update
from bench.settings import Settings
from ewc_training.config import Config
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer


def steady_steps_per_second(sps_log: list[tuple[int, float]]) -> float:
    """Agent steps/s over every logged interval but the first (start-up, warm-up, graph capture)."""
    bounds = [0] + [step for step, _ in sps_log]
    intervals = [(end - begin, sps) for begin, end, (_, sps) in zip(bounds, bounds[1:], sps_log)]
    kept = intervals[1:] or intervals
    return sum(steps for steps, _ in kept) / sum(steps / sps for steps, sps in kept)


def loop_steps_per_second(config: Config, device: torch.device) -> tuple[float, str]:
    """The real training loop (`SequenceTrainer.train_game`) on one game, from its own SPS logs;
    also returns the update mode it ran with."""
    with tempfile.TemporaryDirectory() as run_dir:
        logger = MemoryLogger()
        trainer = SequenceTrainer(config, Path(run_dir), device, logger)
        activate_penalty(trainer.learner)
        logger.start()
        trainer.train_game()
        return steady_steps_per_second(logger.scalars["charts/SPS"]), trainer.learner.update_mode


def end_to_end_rounds(config: Config, device: torch.device, settings: Settings, replay: FrameReplay, say) -> list[dict]:
    """Rounds of: environment only at the loop's num_envs, learner only in the loop's update mode,
    the training loop, CleanRL's loop structure, back to back. Ratios are taken within a round, so
    that a machine that gets busier or quieter during the benchmark does not bias them."""
    mode = resolve_update_mode(config.agent.update_mode, device)
    learner = make_learner(config, device, mode)
    rounds = []
    for index in range(1, settings.end_to_end_rounds + 1):
        say(
            f"end to end, round {index}/{settings.end_to_end_rounds}: env only, learner only, training loop "
            f"({settings.num_envs} envs, {settings.end_to_end_steps:,} steps), "
            f"CleanRL-structured loop ({settings.cleanrl_steps:,} steps) ..."
        )
        env_only = env_steps_per_second(settings, settings.num_envs, config)
        (seconds,) = seconds_per_update([learner], replay, settings.game, settings.learner_updates, rounds=1)
        learner_bound = config.agent.steps_per_update / seconds[0]
        peer_round = loop_against_cleanrl(config, device, settings.cleanrl_steps)
        rounds.append(
            {
                "env_only_steps_per_s": env_only,
                "learner_bound_steps_per_s": learner_bound,
                **peer_round,
                "pipeline_efficiency": peer_round["loop_steps_per_s"] / min(env_only, learner_bound),
            }
        )
    return rounds


def loop_against_cleanrl(config: Config, device: torch.device, cleanrl_steps: int) -> dict:
    """One round of the peer comparison: the training loop, then CleanRL's loop structure, and their ratio."""
    loop, loop_mode = loop_steps_per_second(config, device)
    cleanrl = cleanrl_steps_per_second(config, device, cleanrl_steps)
    return {
        "loop_steps_per_s": loop,
        "loop_update_mode": loop_mode,
        "cleanrl_steps_per_s": cleanrl,
        "speedup_over_cleanrl": loop / cleanrl,
    }


def loop_summary(rounds: list[dict]) -> dict:
    """Medians over rounds of the training loop, CleanRL's structure and their ratio."""
    return {
        "loop_update_mode": rounds[0]["loop_update_mode"],
        "loop_steps_per_s": statistics.median(r["loop_steps_per_s"] for r in rounds),
        "cleanrl_steps_per_s": statistics.median(r["cleanrl_steps_per_s"] for r in rounds),
        "speedup_over_cleanrl": statistics.median(r["speedup_over_cleanrl"] for r in rounds),
        "rounds": rounds,
    }
