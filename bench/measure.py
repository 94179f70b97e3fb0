"""The benchmark's measurements: how fast each part of training runs, and how well the loop overlaps them.

    python -m bench                                  # standard settings on CUDA, small ones on a CPU
    python -m bench --quick --out runs/bench.json    # about half as long
    python -m bench.throughput --device cpu --threads 1

Everything is measured in one process, in one run, so every ratio compares like with like. On a
shared machine other work disturbs some runs: rates of one part alone are the best of a few runs,
and the end-to-end ratios are medians over rounds that measure every part back to back:
- environment only: agent steps/s of the vector env across num_envs, random actions, no learner;
- learner only: updates/s of "sample a batch from the frame-once replay on the device + one
  update", eager float32 and in the device's faster mode (a replayed CUDA graph on CUDA, the
  compiled update on a CPU), with the ratio and the first update's time (compile, capture);
- end to end: agent steps/s of the real training loop (`SequenceTrainer.train_game`), and of
  CleanRL's `dqn_atari.py` loop structure (1 emulator stepped synchronously, replay in host memory,
  eager float32 updates), with the ratio;
- the peer comparison: both ratios again for the MinAtar network on a MinAtar game, against the
  targets of issue 13 (PEER_TARGET);
- the pipeline check: end to end >= 80% of min(env only at the same num_envs, 4 x learner only);
- the policy Fisher's time, the EWC penalty's share of an update, replay bytes per transition,
  peak host and GPU memory.

The learner is set up as from the second game of a sequence on: the EWC penalty is active.
Settings are the training defaults (Nature CNN, 18 actions, batch 32, one update per 4 agent steps,
Adam), with learning from the first step; `Settings` holds how long each part runs, and the JSON
record holds the settings. Nothing is hard-coded: the only figure not measured
directly, the Fisher over 3,200 samples on a CPU (where that takes minutes), is extrapolated from
fewer samples and labelled so.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agents.build import build_learner
from agents.compiled import compiler_available
from agents.cuda_graph import resolve_update_mode
from agents.dqn import DQNLearner, epsilon_at
from agents.ewc.fisher import diagonal_fisher, replay_batches
from agents.replay import FrameReplay, Transitions
from bench.roofline import roofline, update_flops
from bench.settings import (
    FISHER_REFERENCE_SAMPLES,
    LEARNER_ROUNDS,
    PEER_TARGET,
    PIPELINE_TARGET,
    Settings,
    benchmark_config,
    minatar_config,
)
from envs.atari import NUM_ACTIONS
from envs.families import ATARI, Family, family_of_run, make_env
from ewc_training.config import Config
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def activate_penalty(learner: DQNLearner) -> None:
    """Give the learner's EWC a finished earlier game, as from the second game of a sequence on."""
    learner.consolidation.end_game(
        "earlier-game",
        learner.online,
        lambda: {name: torch.rand_like(p) for name, p in learner.online.shared_parameters().items()},
    )


def make_learner(config: Config, device: torch.device, update_mode: str, penalty: bool = True) -> DQNLearner:
    """The training builder's learner in `update_mode`, with the EWC penalty on (or fine-tuning)."""
    sections = dataclasses.replace(
        config,
        agent=dataclasses.replace(config.agent, update_mode=update_mode),
        consolidation=dataclasses.replace(config.consolidation, method="ewc" if penalty else "finetune"),
    )
    learner = build_learner(sections, config.run.games, family_of_run(config.run.games), device, config.run.seed)
    if penalty:
        activate_penalty(learner)
    return learner


def random_replay(transitions: int, num_envs: int, device: torch.device, family: Family = ATARI) -> FrameReplay:
    """A frame-once replay of `family`'s frames, filled with random ones and a few episode ends
    (speed does not depend on what the frames show)."""
    replay = FrameReplay(transitions, num_envs, device, frame_shape=family.frame_shape, history=family.history)

    def frames() -> torch.Tensor:
        return torch.randint(0, 256, (num_envs, *family.observation_shape), dtype=torch.uint8, device=device)

    replay.add_first(frames())
    no = torch.zeros(num_envs, dtype=torch.bool, device=device)
    for _ in range(replay.slots - 1):
        actions = torch.randint(family.num_actions, (num_envs,), device=device)
        replay.add(actions, torch.zeros(num_envs, device=device), torch.rand(num_envs, device=device) < 0.01, no, frames())
    return replay


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
    """Seconds per update (sample + update) of each learner in each round, after warm-up updates
    (and graph capture). Rounds alternate between the learners, so a busy moment hits them alike."""
    device, batch_size = replay.device, learners[0].config.batch_size
    for learner in learners:
        for _ in range(5):
            learner.update(replay.sample(batch_size), game)
    synchronize(device)
    seconds: list[list[float]] = [[] for _ in learners]
    for _ in range(rounds):
        for learner, per_round in zip(learners, seconds):
            start = time.perf_counter()
            for _ in range(updates):
                learner.update(replay.sample(batch_size), game)
            synchronize(device)
            per_round.append((time.perf_counter() - start) / updates)
    return seconds


def first_update_seconds(learner: DQNLearner, replay: FrameReplay, game: str) -> float:
    """Seconds of a learner's first update: what compiling (or capturing a CUDA graph) costs, paid once
    per process and game."""
    synchronize(replay.device)
    start = time.perf_counter()
    learner.update(replay.sample(learner.config.batch_size), game)
    synchronize(replay.device)
    return time.perf_counter() - start


GEMM_SIDES = (256, 512, 1024)
"""Square float32 matmuls timed for the GEMM rate R: a BLAS is not fastest at one size for every
CPU and thread count, so R is the best over these (each a fraction of a second)."""


def matmul_repeats(side: int) -> int:
    """Matmuls per timing: about 2 GFLOP for the smaller sides, two at 1024."""
    return max(2, 2 * (GEMM_SIDES[-1] // side) ** 3)


def gemm_gflops(rounds: int = 3) -> float:
    """The CPU's float32 matrix-multiply rate at the current threads (bench/roofline.py's R), in
    GFLOP/s: the best over `rounds` timings of each of GEMM_SIDES."""
    best = 0.0
    for side in GEMM_SIDES:
        a, b = torch.ones(side, side), torch.ones(side, side)
        a @ b  # first call: the BLAS's set-up for this shape
        repeats = matmul_repeats(side)
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best = max(best, 2 * side**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


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


# --- end to end ---------------------------------------------------------------------------------


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


def cleanrl_steps_per_second(config: Config, device: torch.device, steps: int) -> float:
    """The peer the loop must beat, CleanRL's `dqn_atari.py` loop structure: one emulator stepped
    synchronously, one action chosen per step, the replay in host memory (each batch copied to the
    device), eager float32 updates. Same network, optimizer, replay ratio and EWC penalty as the
    loop; timed after its first fifth, as the loop is timed after its first log interval."""
    game, agent = config.run.games[0], config.agent
    family = family_of_run(config.run.games)
    env = make_env(game, 1, config.env)
    observations, _ = env.reset(seed=0)
    learner = make_learner(config, device, "eager")
    replay = FrameReplay(steps + 16, 1, "cpu", frame_shape=family.frame_shape, history=family.history)
    replay.add_first(torch.from_numpy(observations))
    generator = torch.Generator(device=device)
    for step in range(1, steps + 1):
        if step == steps // 5:
            synchronize(device)
            start = time.perf_counter()
        epsilon = epsilon_at(step, agent, steps)
        action = learner.act(torch.from_numpy(observations).to(device), game, epsilon, generator).cpu()
        observations, rewards, terminated, truncated, _ = env.step(action.numpy())
        replay.add(
            action,
            torch.from_numpy(np.clip(rewards, -1, 1)),
            torch.from_numpy(terminated),
            torch.from_numpy(truncated),
            torch.from_numpy(observations),
        )
        if step % agent.steps_per_update == 0 and len(replay) >= agent.batch_size:
            batch = Transitions(*(tensor.to(device) for tensor in replay.sample(agent.batch_size)))
            learner.update(batch, game)
    synchronize(device)
    elapsed = time.perf_counter() - start
    env.close()
    return (steps - steps // 5 + 1) / elapsed


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


def minatar_figures(device: torch.device, settings: Settings, say) -> dict:
    """The MinAtar side of the peer comparison: learner only (eager against the default mode), then
    rounds of the training loop against CleanRL's loop structure, on the MinAtar paper's network."""
    config = minatar_config(settings)
    family = family_of_run(config.run.games)
    replay = random_replay(8_192, settings.num_envs, device, family)
    say(f"MinAtar learner only ({settings.minatar_learner_updates} updates x {LEARNER_ROUNDS} rounds per mode) ...")
    learner = learner_figures(config, device, settings.minatar_learner_updates, replay)
    rounds = []
    for index in range(1, settings.end_to_end_rounds + 1):
        say(
            f"MinAtar end to end, round {index}/{settings.end_to_end_rounds}: training loop ({settings.minatar_steps:,} steps), "
            f"CleanRL-structured loop ({settings.minatar_steps // 2:,} steps) ..."
        )
        rounds.append(loop_against_cleanrl(config, device, settings.minatar_steps // 2))
    return {
        "game": config.run.games[0],
        "network": config.network.architecture,
        "learner": learner,
        "end_to_end": loop_summary(rounds),
    }


def peer_verdict(record: dict, steps_per_update: int) -> dict:
    """Issue 13's four ratios (learner and end to end, Atari and MinAtar) against PEER_TARGET, and on
    a CPU the float32 ceiling of each: whether the target is reachable at all at these threads (and
    whether a ratio went past its ceiling, which would mean R was measured too low)."""
    ratios = {
        "atari_learner_over_eager": record["learner"]["speedup_over_eager"],
        "atari_loop_over_cleanrl": record["end_to_end"]["speedup_over_cleanrl"],
        "minatar_learner_over_eager": record["minatar"]["learner"]["speedup_over_eager"],
        "minatar_loop_over_cleanrl": record["minatar"]["end_to_end"]["speedup_over_cleanrl"],
    }
    passed = {key: ratio >= PEER_TARGET for key, ratio in ratios.items()}
    if "roofline" not in record["learner"]["eager"]:  # not on CUDA
        return {"target": PEER_TARGET, "ratios": ratios, "passed": passed}
    ceilings = {
        "atari_learner_over_eager": record["learner"]["eager"]["roofline"]["float32_ceiling"],
        "atari_loop_over_cleanrl": loop_ceiling(record["learner"], record["end_to_end"], steps_per_update),
        "minatar_learner_over_eager": record["minatar"]["learner"]["eager"]["roofline"]["float32_ceiling"],
        "minatar_loop_over_cleanrl": loop_ceiling(
            record["minatar"]["learner"], record["minatar"]["end_to_end"], steps_per_update
        ),
    }
    return {
        "target": PEER_TARGET,
        "ratios": ratios,
        "passed": passed,
        "float32_ceilings": ceilings,
        "reachable": {key: ceiling >= PEER_TARGET for key, ceiling in ceilings.items()},
        "ceiling_exceeded": {key: ratios[key] > ceiling for key, ceiling in ceilings.items()},
    }


def loop_ceiling(learner: dict, end_to_end: dict, steps_per_update: int) -> float:
    """The most the training loop could lead CleanRL's structure by at these threads in float32:
    acting wholly hidden, every update at the GEMM rate (bench/roofline.py); the median over rounds,
    as the ratio it bounds."""
    arithmetic = learner["eager"]["roofline"]
    fastest_loop = steps_per_update * arithmetic["gemm_gflops"] / arithmetic["gflop_per_update"]
    return statistics.median(fastest_loop / r["cleanrl_steps_per_s"] for r in end_to_end["rounds"])


# --- Fisher and memory --------------------------------------------------------------------------


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


def tensor_bytes(obj: object) -> int:
    return sum(value.nbytes for value in vars(obj).values() if isinstance(value, torch.Tensor))


def replay_figures(settings: Settings, device: torch.device) -> tuple[dict, FrameReplay]:
    """Bytes per transition of a FrameReplay as allocated (and, on CUDA, as the allocator saw it)."""
    synchronize(device)
    allocated_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    replay = FrameReplay(settings.replay_transitions, settings.num_envs, device)
    per_transition = tensor_bytes(replay) / replay.capacity
    figures = {
        "capacity": replay.capacity,
        "bytes_per_transition": per_transition,
        "gb_per_million_transitions": per_transition * 1e6 / 1e9,
    }
    if device.type == "cuda":
        figures["device_gb_allocated"] = (torch.cuda.memory_allocated(device) - allocated_before) / 1e9
    return figures, replay


def peak_memory(device: torch.device) -> dict:
    figures = {"peak_host_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}
    if device.type == "cuda":
        figures["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        figures["peak_gpu_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 1e9
    return figures


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import ale_py

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu}",
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ale_py": ale_py.__version__,
    }


# --- the whole run ------------------------------------------------------------------------------


def run(device: torch.device, settings: Settings, say=print, save=lambda record: None) -> dict:
    """Every measurement, in an order that keeps the slow ones for last; returns the JSON record.

    `save` gets the record after every section (`complete` false until the end), so a run cut
    short by a time limit still leaves what it measured.
    """
    config = benchmark_config(settings)
    record: dict[str, object] = {"complete": False, "machine": machine(device), "settings": dataclasses.asdict(settings)}
    started = time.perf_counter()

    counts = sorted(set(settings.env_counts) | {settings.num_envs})
    say(f"environment only (2 x {settings.env_seconds:g} s per num_envs) ...")
    record["env_only_steps_per_s"] = {n: max(env_steps_per_second(settings, n, config) for _ in range(2)) for n in counts}
    save(record)

    say(f"replay ({settings.replay_transitions:,} transitions) ...")
    record["replay"], big_replay = replay_figures(settings, device)
    del big_replay
    replay = random_replay(8_192, 8, device)

    say(f"learner only ({settings.learner_updates} updates x {LEARNER_ROUNDS} rounds per mode, and eager without penalty) ...")
    record["learner"] = learner_figures(config, device, settings.learner_updates, replay)
    save(record)

    say(f"policy Fisher ({settings.fisher_samples} samples) ...")
    record["fisher"] = fisher_figures(config, device, settings, replay)
    save(record)

    rounds = end_to_end_rounds(config, device, settings, replay, say)
    record["end_to_end"] = loop_summary(rounds)
    efficiency = statistics.median(r["pipeline_efficiency"] for r in rounds)
    record["pipeline"] = {"efficiency": efficiency, "target": PIPELINE_TARGET, "passed": efficiency >= PIPELINE_TARGET}
    save(record)

    record["minatar"] = minatar_figures(device, settings, say)
    record["peer"] = peer_verdict(record, config.agent.steps_per_update)
    record["memory"] = peak_memory(device)
    record["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    record["seconds"] = time.perf_counter() - started
    record["complete"] = True
    save(record)
    return record
