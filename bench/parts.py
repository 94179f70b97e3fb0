"""Each part of training timed alone: the vector env stepped with random actions, the learner's
update in eager float32 and in the device's faster mode, each with sampling (`update(replay)`, as
training runs it) and on a ready batch (`update(batch)`, the update alone), and the policy Fisher
computed at a game's end. Each runs for a fixed wall time (bench/clock.py);
rates of a part alone are the best of a few runs: on a shared machine other work can only slow a
run down.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from agents.compiled import compiler_available
from agents.cuda_graph import resolve_update_mode
from agents.dqn import DQNLearner
from agents.ewc.fisher import diagonal_fisher, replay_batches
from agents.replay import FrameReplay, Transitions
from bench.build import make_learner, synchronize
from bench.clock import count_until
from bench.roofline import gemm_gflops, roofline, update_flops
from bench.settings import FISHER_REFERENCE_SAMPLES, Settings
from envs.atari import NUM_ACTIONS
from envs.families import make_env
from ewc_training.config import Config

Source = FrameReplay | Transitions
"""Where an update gets its batch: a replay it samples (on the device; inside the graph on CUDA) or a
batch drawn before."""
WARMUP_UPDATES = 5
"""Updates of each learner before its timed rounds (after its first update: compile or capture)."""

# --- environment only ---------------------------------------------------------------------------


class Emulators:
    """The vector env alone, stepped with send/recv and random actions as the training loop steps it:
    one vector env per num_envs, started once and kept for the whole run (starting emulators costs
    about 0.1 to 0.2 s apiece, more than a short window; idle ones cost nothing), timed as often as asked."""

    def __init__(self, game: str, config: Config):
        self.game, self.config = game, config
        self.envs: dict[int, object] = {}
        self.rng = np.random.default_rng(0)

    def step(self, num_envs: int) -> None:
        env = self.envs[num_envs]
        env.send(self.rng.integers(NUM_ACTIONS, size=num_envs))
        env.recv()

    def steps_per_second(self, num_envs: int, seconds: float) -> float:
        """Agent steps/s of `num_envs` emulators over `seconds`."""
        if num_envs not in self.envs:
            self.envs[num_envs] = make_env(self.game, num_envs, self.config.env)
            self.envs[num_envs].reset(seed=0)
            for _ in range(10):  # the first steps pay thread start-up
                self.step(num_envs)
        steps, elapsed = count_until(seconds, functools.partial(self.step, num_envs))
        return steps * num_envs / elapsed

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs = {}


# --- learner only -------------------------------------------------------------------------------


def seconds_per_update(
    runs: list[tuple[DQNLearner, Source]], game: str, device: torch.device, seconds: float, rounds: int
) -> list[list[float]]:
    """Seconds per update of each (learner, source) in each round, each round `seconds` long, after
    warm-up updates. Rounds alternate between the learners, so a busy moment hits them alike."""
    for learner, source in runs:
        for _ in range(WARMUP_UPDATES):
            learner.update(source, game)
    synchronize(device)
    per_run: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for (learner, source), per_round in zip(runs, per_run):
            update = functools.partial(learner.update, source, game)
            updates, elapsed = count_until(seconds, update, functools.partial(synchronize, device))
            per_round.append(elapsed / updates)
    return per_run


def first_update_seconds(learner: DQNLearner, source: Source, game: str, device: torch.device) -> float:
    """Seconds of a learner's first update: what compiling (or capturing a CUDA graph) costs, paid once
    per process and game."""
    synchronize(device)
    start = time.perf_counter()
    learner.update(source, game)
    synchronize(device)
    return time.perf_counter() - start


def faster_mode(device: torch.device) -> str:
    """The update mode measured against eager float32: the CUDA graph on CUDA, the compiled update on
    a CPU (eager again where no C++ compiler is found, so the ratio is then 1 by construction)."""
    return "cuda-graph" if device.type == "cuda" else resolve_update_mode("compiled" if compiler_available() else "eager", device)


def rate(seconds: list[float]) -> dict:
    """A learner's figures from its rounds' seconds per update: the fastest round counts."""
    return {"updates_per_s": 1.0 / min(seconds), "ms_per_update": 1e3 * min(seconds), "round_ms": [1e3 * s for s in seconds]}


def learner_figures(
    config: Config, device: torch.device, replay: FrameReplay, seconds: float, rounds: int
) -> tuple[dict, dict[tuple[str, str], Callable[[], object]]]:
    """Eager float32 and the device's faster mode, each with sampling (`update(replay)`) and on a
    ready batch (`update(batch)`), in alternating rounds: ms per update and the first update's time
    (compile, capture), with the faster mode's speed-up (median of the rounds' ratios) for each
    source. A CUDA graph serves one kind of source, so every (mode, source) has a learner of its own.
    The EWC penalty's share of an eager update is the time it adds: an eager learner without it runs
    too. Also returns each (mode, source)'s update, to count its kernels at the run's end
    (bench/kernels.py `add_kernel_counts`)."""
    candidate = faster_mode(device)
    modes = list(dict.fromkeys(["eager", candidate]))
    game = config.run.games[0]
    sources: dict[str, Source] = {"sampled": replay, "ready_batch": replay.sample(config.agent.batch_size)}
    runs = [(mode, name, make_learner(config, device, mode)) for mode in modes for name in sources]
    first = [first_update_seconds(learner, sources[name], game, device) for _, name, learner in runs]
    plain = make_learner(config, device, "eager", penalty=False)
    gemm_before = gemm_gflops() if device.type == "cpu" else None
    timed = [(learner, sources[name]) for _, name, learner in runs] + [(plain, replay)]
    *per_run, without = seconds_per_update(timed, game, device, seconds, rounds)
    times = {(mode, name): per_round for (mode, name, _), per_round in zip(runs, per_run)}
    figures: dict[str, object] = {"faster_mode": candidate, "default_mode": resolve_update_mode("auto", device)}
    updates = {}
    for (mode, name, learner), per_round, first_seconds in zip(runs, per_run, first):
        figures.setdefault(mode, {})[name] = {**rate(per_round), "first_update_s": first_seconds}
        updates[mode, name] = functools.partial(learner.update, sources[name], game)
    eager, fastest = figures["eager"], min(times["eager", "sampled"])
    eager["ms_per_update_without_penalty"] = 1e3 * min(without)
    eager["penalty_share"] = (fastest - min(without)) / fastest
    if gemm_before is not None:  # CPU only: see bench/roofline.py
        flops = update_flops(plain, replay.sample(plain.config.batch_size), game)
        eager["roofline"] = roofline(flops, statistics.median(times["eager", "sampled"]), max(gemm_before, gemm_gflops()))
    for name, suffix in (("sampled", ""), ("ready_batch", "_ready_batch")):
        ratios = [e / f for e, f in zip(times["eager", name], times[candidate, name])]
        figures["speedup_over_eager" + suffix] = statistics.median(ratios)
        figures["rounds_speedup_over_eager" + suffix] = ratios
    return figures, updates


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
