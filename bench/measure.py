"""The benchmark's whole run: how fast each part of training runs, and how well the loop overlaps them.

    python -m bench                                  # standard settings on CUDA, small ones on a CPU
    python -m bench --quick --out runs/bench.json    # about half as long
    python -m bench --device cpu --threads 1

Everything is measured in one process, in one run, so every ratio compares like with like. On a
shared machine other work disturbs some runs: rates of one part alone are the best of a few runs,
and the end-to-end ratios are medians over rounds that measure every part back to back:
- environment only (bench/parts.py): agent steps/s of the vector env across num_envs, random
  actions, no learner;
- learner only (bench/parts.py): updates/s of "sample a batch from the frame-once replay on the device + one
  update", eager float32 and in the device's faster mode (a replayed CUDA graph on CUDA, the
  compiled update on a CPU), with the ratio and the first update's time (compile, capture);
- end to end (bench/loop.py, bench/cleanrl.py): agent steps/s of the real training loop (`SequenceTrainer.train_game`), and of
  CleanRL's `dqn_atari.py` loop structure (1 emulator stepped synchronously, replay in host memory,
  eager float32 updates), with the ratio;
- the peer comparison (bench/peer.py): both ratios again for the MinAtar network on a MinAtar
  game, all four against PEER_TARGET;
- the pipeline check: end to end >= 80% of min(env only at the same num_envs, 4 x learner only);
- the policy Fisher's time (bench/parts.py), the EWC penalty's share of an update, replay bytes per
  transition and peak host and GPU memory (bench/memory.py).

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
import statistics
import time

import torch

from bench.build import random_replay
from bench.loop import end_to_end_rounds, loop_summary
from bench.memory import peak_memory, replay_figures
from bench.parts import env_steps_per_second, fisher_figures, learner_figures
from bench.peer import minatar_figures, peer_verdict
from bench.settings import LEARNER_ROUNDS, PIPELINE_TARGET, Settings, benchmark_config


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
