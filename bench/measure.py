"""The benchmark's whole run: how fast each part of training runs, and how well the loop overlaps them.

    python -m bench                                  # standard settings on CUDA, small ones on a CPU
    python -m bench --quick --out runs/bench.json    # every timed window halved
    python -m bench --device cpu --threads 1

Everything is measured in one process, in one run, so every ratio compares like with like. Loops
and learners run for a fixed wall time per round and their steps are counted (bench/clock.py), so
the run takes what `Settings.budget()` plans, whatever the machine's speed; the record holds each
part's planned and actual seconds. On a shared machine other work disturbs some runs: rates of one
part alone are the best of a few runs, and the end-to-end figures are medians over rounds that
measure every part back to back:
- environment only (bench/parts.py): agent steps/s of the vector env at each num_envs of the sweep,
  random actions, no learner;
- learner only (bench/parts.py): ms per update, eager float32 and in the device's faster mode (a
  replayed CUDA graph on CUDA, the compiled update on a CPU), each with sampling (`update(replay)`:
  the batch drawn from the frame-once replay on the device, as training runs it) and on a ready
  batch (`update(batch)`), with the speed-ups and the first update's time (compile, capture);
  kernels per update of each (bench/kernels.py) are counted at the run's end;
- end to end (bench/loop.py, bench/cleanrl.py): agent steps/s of the real training loop
  (`PopulationTrainer.train_game` of one run) at each of the loop's num_envs, and of CleanRL's `dqn_atari.py` loop
  structure (1 emulator stepped synchronously, replay in host memory, eager float32 updates), with
  the ratio at the standard num_envs;
- the pipeline check, at each num_envs: end to end >= 80% of its bound, min(env only at the same
  num_envs, 4 x learner only with sampling); CleanRL's structure's share of its own bound beside it;
- the peer comparison (bench/peer.py): both ratios again for the MinAtar network on a MinAtar
  game, all four against PEER_TARGET;
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
import time

import torch

from bench.build import random_replay
from bench.kernels import add_kernel_counts
from bench.loop import cleanrl_share, end_to_end_rounds, loop_summary
from bench.memory import peak_memory, replay_figures
from bench.parts import Emulators, fisher_figures, learner_figures
from bench.peer import minatar_figures, peer_verdict
from bench.settings import PIPELINE_TARGET, Settings, benchmark_config


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


def run(device: torch.device, settings: Settings, say=print, save=lambda record: None, already: float = 0.0) -> dict:
    """Every measurement, in an order that keeps the slow ones for last; returns the JSON record.

    `already`: seconds the process ran before this call (imports), counted in the start-up part.
    `save` gets the record after every section (`complete` false until the end), so a run cut
    short by a time limit still leaves what it measured.
    """
    origin = time.perf_counter() - already
    config = benchmark_config(settings)
    budget = settings.budget()
    record: dict[str, object] = {
        "complete": False,
        "machine": machine(device),
        "settings": dataclasses.asdict(settings),
        "budget_s": budget,
    }
    took: dict[str, float] = {}
    record["seconds_by_part"] = took
    mark = [origin]

    def done(part: str) -> None:
        """Close `part`: its seconds since the last part closed, and the record saved."""
        now = time.perf_counter()
        took[part] = took.get(part, 0.0) + now - mark[0]
        mark[0] = now
        save(record)

    say(f"planned: {budget['total']:.0f} s ({', '.join(f'{part} {s:.0f}' for part, s in budget.items() if part != 'total')})")
    say(f"replay ({settings.replay_transitions:,} transitions) ...")
    record["replay"], big_replay = replay_figures(settings, device)
    del big_replay
    replay = random_replay(8_192, 8, device)
    done("start")

    say(f"environment only (2 x {settings.env_seconds:g} s per num_envs) ...")
    emulators = Emulators(settings.game, config)
    record["env_only_steps_per_s"] = {
        n: max(emulators.steps_per_second(n, settings.env_seconds) for _ in range(2)) for n in sorted(settings.env_counts)
    }
    done("environment only")

    say(f"learner only ({settings.learner_seconds:g} s x {settings.learner_rounds} rounds per learner) ...")
    record["learner"], updates = learner_figures(config, device, replay, settings.learner_seconds, settings.learner_rounds)
    done("learner only")

    say(f"policy Fisher ({settings.fisher_samples} samples) ...")
    record["fisher"] = fisher_figures(config, device, settings, replay)
    done("fisher")

    try:
        rounds = end_to_end_rounds(config, device, settings, replay, emulators, say)
    finally:
        emulators.close()
    e2e = loop_summary(rounds, settings.num_envs)
    one_env = record["env_only_steps_per_s"].get(1)
    eager_ms = record["learner"]["eager"]["sampled"]["ms_per_update"]
    e2e["cleanrl"] = cleanrl_share(e2e["cleanrl_steps_per_s"], eager_ms, config.agent.steps_per_update, one_env)
    record["end_to_end"] = e2e
    record["pipeline"] = pipeline_verdict(e2e["share_of_bound"])
    done("end to end")

    record["minatar"], minatar_updates = minatar_figures(device, settings, say)
    record["peer"] = peer_verdict(record, config.agent.steps_per_update)
    done("minatar")

    say(f"kernels per update (torch.profiler, {settings.kernel_updates} updates of each learner) ...")
    add_kernel_counts(record["learner"], updates, settings.kernel_updates, device)
    add_kernel_counts(record["minatar"]["learner"], minatar_updates, settings.kernel_updates, device)
    record["memory"] = peak_memory(device)
    record["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    record["complete"] = True
    done("kernels")
    record["seconds"] = time.perf_counter() - origin
    save(record)
    return record


def pipeline_verdict(shares: dict[int, float]) -> dict:
    """The pipeline check at each num_envs: the loop's share of its bound against PIPELINE_TARGET."""
    passed = {n: share >= PIPELINE_TARGET for n, share in shares.items()}
    return {"target": PIPELINE_TARGET, "share_of_bound": shares, "passed": passed, "all_passed": all(passed.values())}
