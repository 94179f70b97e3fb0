"""End to end: agent steps/s of the real training loop (`PopulationTrainer.train_game`, one run) at each num_envs
and of CleanRL's loop structure, in rounds that also time the env alone at each count and the learner
alone back to back, so that every ratio and share of a bound is taken within one round and a machine
that gets busier or quieter during the benchmark does not bias it. Each loop runs for a fixed wall
time (bench/clock.py `Window`), not a fixed count of steps.
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
from bench.clock import Window
from bench.parts import Emulators, seconds_per_update
from bench.settings import Settings, benchmark_config
from ewc_training.config import Config
from ewc_training.logger import MemoryLogger
from ewc_training.population import PopulationTrainer
from ewc_training.trainer import SequenceTrainer


class WindowClosed(Exception):
    """The loop's timed window has closed: the benchmark stops the loop there."""


class TimedTrainer(SequenceTrainer):
    """The training loop as train.py runs it, stopped when its timed window closes (checked after every
    vector step, where the loop itself logs and checkpoints)."""

    def __init__(self, config: Config, run_dir: Path, device: torch.device, window: Window):
        super().__init__(config, run_dir, device, MemoryLogger())
        self.window = window

    def after_vector_step(self, replay, game, epsilon, progress) -> None:
        super().after_vector_step(replay, game, epsilon, progress)
        if self.window.tick(self.position.step_in_game, ready=self.learner.updates > 0):
            raise WindowClosed


def loop_steps_per_second(config: Config, device: torch.device, warmup: float, seconds: float) -> tuple[float, str]:
    """The real training loop (`PopulationTrainer.train_game` of one run) on one game, EWC penalty on, timed over a
    window of `seconds` that opens `warmup` seconds after its first update; also returns the update
    mode it ran with (`auto` falls back to eager if a capture disagrees with it)."""
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = TimedTrainer(config, Path(run_dir), device, Window(warmup, seconds))
        activate_penalty(trainer.learner)
        trainer.logger.start()
        try:
            PopulationTrainer([trainer]).train_game()
        except WindowClosed:
            pass
        return trainer.window.rate(), trainer.learner.update_mode


def share_of_bound(loop: float, env_only: float, learner_bound: float) -> float:
    """The pipeline's measure: the loop's agent steps/s over the slower of its two parts alone (the
    emulators at the same num_envs, and `steps_per_update` x the learner's updates/s), which a loop that
    overlaps them perfectly would reach."""
    return loop / min(env_only, learner_bound)


def end_to_end_rounds(
    config: Config, device: torch.device, settings: Settings, replay: FrameReplay, emulators: Emulators, say
) -> list[dict]:
    """Rounds of: environment only at each loop count, learner only in the loop's update mode (with
    sampling, as the loop runs it), the training loop at each count, CleanRL's loop structure."""
    learner = make_learner(config, device, resolve_update_mode(config.agent.update_mode, device))
    counts, game = settings.counts, config.run.games[0]
    rounds = []
    for index in range(1, settings.end_to_end_rounds + 1):
        say(
            f"end to end, round {index}/{settings.end_to_end_rounds}: env only, learner only, training loop at "
            f"{'/'.join(map(str, counts))} envs ({settings.loop_seconds:g} s each), "
            f"CleanRL-structured loop ({settings.cleanrl_seconds:g} s) ..."
        )
        env_only = {n: emulators.steps_per_second(n, settings.env_seconds) for n in counts}
        (seconds,) = seconds_per_update([(learner, replay)], game, device, settings.learner_seconds, rounds=1)
        learner_bound = config.agent.steps_per_update / seconds[0]
        loops, modes = {}, set()
        for n in counts:
            loop_config = benchmark_config(settings, n)
            loops[n], mode = loop_steps_per_second(loop_config, device, settings.warmup_seconds, settings.loop_seconds)
            modes.add(mode)
        cleanrl = cleanrl_steps_per_second(config, device, settings.warmup_seconds, settings.cleanrl_seconds)
        rounds.append(
            {
                "env_only_steps_per_s": env_only,
                "learner_bound_steps_per_s": learner_bound,
                "loop_update_mode": "/".join(sorted(modes)),
                "loop_steps_per_s": loops,
                "share_of_bound": {n: share_of_bound(loops[n], env_only[n], learner_bound) for n in counts},
                "cleanrl_steps_per_s": cleanrl,
                "speedup_over_cleanrl": loops[settings.num_envs] / cleanrl,
            }
        )
    return rounds


def loop_against_cleanrl(
    config: Config, device: torch.device, warmup: float, loop_seconds: float, cleanrl_seconds: float
) -> dict:
    """One round of the peer comparison: the training loop, then CleanRL's loop structure, and their ratio."""
    loop, mode = loop_steps_per_second(config, device, warmup, loop_seconds)
    cleanrl = cleanrl_steps_per_second(config, device, warmup, cleanrl_seconds)
    return {
        "loop_update_mode": mode,
        "loop_steps_per_s": {config.env.num_envs: loop},
        "cleanrl_steps_per_s": cleanrl,
        "speedup_over_cleanrl": loop / cleanrl,
    }


def loop_summary(rounds: list[dict], num_envs: int) -> dict:
    """Medians over rounds of the training loop at each count (and its share of its bound, where the
    rounds measured one), of CleanRL's structure and of their ratio; `loop_steps_per_s_standard` is the
    loop at `num_envs`, the one set against CleanRL's."""

    def medians(key: str) -> dict:
        return {n: statistics.median(r[key][n] for r in rounds) for n in rounds[0][key]}

    summary = {
        "loop_update_mode": "/".join(sorted({r["loop_update_mode"] for r in rounds})),
        "num_envs": num_envs,
        "loop_steps_per_s": medians("loop_steps_per_s"),
        "cleanrl_steps_per_s": statistics.median(r["cleanrl_steps_per_s"] for r in rounds),
        "speedup_over_cleanrl": statistics.median(r["speedup_over_cleanrl"] for r in rounds),
        "rounds": rounds,
    }
    summary["loop_steps_per_s_standard"] = summary["loop_steps_per_s"][num_envs]
    if "share_of_bound" in rounds[0]:
        summary["share_of_bound"] = medians("share_of_bound")
    return summary


def cleanrl_share(cleanrl: float, eager_sampled_ms: float, steps_per_update: int, env_only_one: float | None) -> dict:
    """CleanRL's structure against its bound: `steps_per_update` x the eager learner alone (with
    sampling), and the emulator alone at 1 env where the sweep measured it. Its loop runs the two one
    after the other, so it stays well below the bound by design."""
    bound = steps_per_update * 1e3 / eager_sampled_ms
    if env_only_one is not None:
        bound = min(bound, env_only_one)
    return {"bound_steps_per_s": bound, "share_of_bound": cleanrl / bound, "env_only_counted": env_only_one is not None}
