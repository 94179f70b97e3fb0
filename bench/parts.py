"""Each part of training timed alone: the vector env stepped with random actions, the learner's
"sample a batch + one update" in eager float32 and in the device's faster mode, and the policy Fisher
computed at a game's end. Rates of a part alone are the best of a few runs: on a shared machine
other work can only slow a run down.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from agents.compiled import compiler_available
from agents.cuda_graph import resolve_update_mode
from agents.dqn import DQNLearner
from agents.ewc.fisher import diagonal_fisher, replay_batches
from agents.replay import FrameReplay
from bench.build import make_learner, synchronize
from bench.roofline import gemm_gflops, roofline, update_flops
from bench.settings import FISHER_REFERENCE_SAMPLES, LEARNER_ROUNDS, Settings
from envs.atari import NUM_ACTIONS
from envs.families import make_env
from ewc_training.config import Config

# --- environment only ---------------------------------------------------------------------------


def env_steps_per_second(settings: Settings, num_envs: int, config: Config) -> float:
    """The vector env alone, stepped with send/recv and random actions, as the training loop steps it."""
    env = make_env(settings.game, num_envs, config.env)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(10):  # the first steps pay thread start-up
        env.send(rng.integers(NUM_ACTIONS, size=num_envs))
        env.recv()
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < settings.env_seconds:
        env.send(rng.integers(NUM_ACTIONS, size=num_envs))
        env.recv()
        rounds += 1
    elapsed = time.perf_counter() - start
    env.close()
    return rounds * num_envs / elapsed


# --- learner only -------------------------------------------------------------------------------


def seconds_per_update(
    learners: list[DQNLearner], replay: FrameReplay, game: str, updates: int, rounds: int = LEARNER_ROUNDS
) -> list[list[float]]:
    """Seconds per update (sample + update, as training runs it: a CUDA graph samples its own batch)
    of each learner in each round, after warm-up updates (and graph capture). Rounds alternate
    between the learners, so a busy moment hits them alike."""
    device = replay.device
    for learner in learners:
        for _ in range(5):
            learner.update(replay, game)
    synchronize(device)
    seconds: list[list[float]] = [[] for _ in learners]
    for _ in range(rounds):
        for learner, per_round in zip(learners, seconds):
            start = time.perf_counter()
            for _ in range(updates):
                learner.update(replay, game)
            synchronize(device)
            per_round.append((time.perf_counter() - start) / updates)
    return seconds


def first_update_seconds(learner: DQNLearner, replay: FrameReplay, game: str) -> float:
    """Seconds of a learner's first update: what compiling (or capturing a CUDA graph) costs, paid once
    per process and game."""
    synchronize(replay.device)
    start = time.perf_counter()
    learner.update(replay, game)
    synchronize(replay.device)
    return time.perf_counter() - start


def faster_mode(device: torch.device) -> str:
    """The update mode measured against eager float32: the CUDA graph on CUDA, the compiled update on
    a CPU (eager again where no C++ compiler is found, so the ratio is then 1 by construction)."""
    return "cuda-graph" if device.type == "cuda" else resolve_update_mode("compiled" if compiler_available() else "eager", device)


def learner_figures(config: Config, device: torch.device, updates: int, replay: FrameReplay) -> dict:
    """Updates/s of eager float32 and of the device's faster mode, in alternating rounds, with the
    speed-up (median of the rounds' ratios) and each first update's time (compile, capture). The EWC
    penalty's share of an eager update is the time it adds: an eager learner without it runs too."""
    candidate = faster_mode(device)
    modes = list(dict.fromkeys(["eager", candidate]))
    learners = [make_learner(config, device, mode) for mode in modes]
    game = config.run.games[0]
    first = [first_update_seconds(learner, replay, game) for learner in learners]
    plain = make_learner(config, device, "eager", penalty=False)
    gemm_before = gemm_gflops() if device.type == "cpu" else None
    *per_mode, without = seconds_per_update(learners + [plain], replay, game, updates)
    figures: dict[str, object] = {"faster_mode": candidate, "default_mode": resolve_update_mode("auto", device)}
    for mode, seconds, first_seconds in zip(modes, per_mode, first):
        figures[mode] = {
            "updates_per_s": 1.0 / min(seconds),
            "ms_per_update": 1e3 * min(seconds),
            "first_update_s": first_seconds,
            "round_ms": [1e3 * s for s in seconds],
        }
    eager = figures["eager"]
    eager["ms_per_update_without_penalty"] = 1e3 * min(without)
    eager["penalty_share"] = (min(per_mode[0]) - min(without)) / min(per_mode[0])
    if gemm_before is not None:  # CPU only: see bench/roofline.py
        flops = update_flops(plain, replay.sample(plain.config.batch_size), game)
        eager["roofline"] = roofline(flops, statistics.median(per_mode[0]), max(gemm_before, gemm_gflops()))
    ratios = [e / f for e, f in zip(per_mode[0], per_mode[-1])]
    figures["speedup_over_eager"] = statistics.median(ratios)
    figures["rounds_speedup_over_eager"] = ratios
    return figures


# --- the Fisher ---------------------------------------------------------------------------------


def fisher_figures(config: Config, device: torch.device, settings: Settings, replay: FrameReplay) -> dict:
    """Seconds of the policy Fisher (exact, all 18 actions) over `fisher_samples` replay states."""
    learner = make_learner(config, device, "eager")
    cons, game = config.consolidation, settings.game

    def timed(samples: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        diagonal_fisher(
            learner.online,
            replay_batches(replay, samples, cons.fisher_batch_size),
            game,
            "policy",
            temperature=cons.policy_temperature,
        )
        synchronize(device)
        return time.perf_counter() - start

    timed(16)  # first-call set-up, paid once per process
    seconds = timed(settings.fisher_samples)
    reference = seconds * FISHER_REFERENCE_SAMPLES / settings.fisher_samples
    exact = settings.fisher_samples == FISHER_REFERENCE_SAMPLES
    return {
        "samples": settings.fisher_samples,
        "batch_size": cons.fisher_batch_size,
        "seconds": seconds,
        "ms_per_sample": 1e3 * seconds / settings.fisher_samples,
        f"seconds_for_{FISHER_REFERENCE_SAMPLES}": reference,
        f"seconds_for_{FISHER_REFERENCE_SAMPLES}_is": "measured"
        if exact
        else f"extrapolated linearly from {settings.fisher_samples} samples",
    }
