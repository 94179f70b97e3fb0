"""Many cells in one process against one process each: `python -m bench.population`.

    python -m bench.population                         # MinAtar preset on this machine's CPU, P = 1, 2, 4, 8
    python -m bench.population --cells 1,8,32 --device cuda

For each population size P it measures, on the same machine and the same two games (by default MinAtar's
breakout -> space_invaders: EWC's penalty is in force in the second):
- together: P cells (seeds 0..P-1, EWC and fine-tuning alternating) trained as one population in one
  process (ewc_training/population.py), with 1 torch thread and with as many as there are cores;
- in one population per core: the P cells split over as many processes as there are cores, 1 thread each;
- apart: P processes of one cell each, started together, 1 torch thread each;
- emulators alone: P x num_envs emulators stepped with random actions in one process, the bound no
  training loop of these cells can pass in one process;
- the batched update alone (one process, 1 thread, EWC's penalty in force): ms per cell-update and, on
  a CPU, its float32 ceiling (bench/roofline.py: how much faster the same arithmetic could run).
Each figure is summed agent steps/s while learning (each game from one log after its first update to
its end, read from each cell's charts/SPS), with its share of the emulators-alone bound. The JSON goes to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from agents.population import PopulationLearner
from bench.build import make_learner, random_replay
from bench.roofline import gemm_gflops, roofline
from envs.families import family_of_run, make_env
from ewc_training.config import build_config
from ewc_training.device import configure_threads, resolve_device
from ewc_training.logger import MemoryLogger
from ewc_training.population import PopulationTrainer
from ewc_training.trainer import SequenceTrainer

LEARNING_STARTS = 2_000
LOG_EVERY = 1_000


def cell_config(args: argparse.Namespace, seed: int):
    method = "ewc" if seed % 2 == 0 else "finetune"
    config = build_config(
        args.config,
        [
            f"run.games=[{args.games}]",
            f"run.steps_per_game={args.steps}",
            f"run.seed={seed}",
            f"run.device={args.device}",
            f"run.log_every={LOG_EVERY}",
            "run.checkpoint_every=0",
            "eval.eval_every=0",
            f"agent.learning_starts={LEARNING_STARTS}",
            f"consolidation.method={method}",
            "consolidation.fisher_samples=64",
            "consolidation.probe_states=0",
        ],
    )
    config.validate()
    return config


def train_population(args: argparse.Namespace, seeds: list[int]) -> float:
    """Summed agent steps/s while learning of `seeds` trained together in this process."""
    device = resolve_device(args.device, warn=False)
    with tempfile.TemporaryDirectory() as folder:
        cells = [SequenceTrainer(cell_config(args, seed), Path(folder) / f"s{seed}", device, MemoryLogger()) for seed in seeds]
        PopulationTrainer(cells).run()
        rates = [learning_rate_of(cell.logger, args.steps) for cell in cells]
    return float(sum(rates))


def learning_rate_of(logger: MemoryLogger, steps_per_game: int) -> float:
    """Mean of a cell's charts/SPS over the logs while it learns: in every game, from one log after its
    first update (LEARNING_STARTS) on, so that no figure spans a boundary's Fisher or a game's acting-only start."""
    rates = [value for step, value in logger.scalars["charts/SPS"] if step % steps_per_game > LEARNING_STARTS + LOG_EVERY]
    return float(np.mean(rates))


def emulators_alone(args: argparse.Namespace, cells: int, seconds: float = 5.0) -> float:
    """Agent steps/s of `cells` x num_envs emulators stepping random actions in one process."""
    config = cell_config(args, 0)
    envs = [make_env(args.games.split(",")[0], config.env.num_envs, config.env) for _ in range(cells)]
    rng = np.random.default_rng(0)
    for index, env in enumerate(envs):
        env.reset(seed=index)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for env in envs:
            env.send(rng.integers(0, 6, config.env.num_envs))
        for env in envs:
            env.recv()
        steps += cells * config.env.num_envs
    rate = steps / (time.perf_counter() - started)
    for env in envs:
        env.close()
    return rate


def batched_update(args: argparse.Namespace, cells: int, seconds: float = 3.0) -> dict[str, float]:
    """One population update of `cells` cells (EWC's penalty in force in each) on this process's threads:
    seconds per cell-update, GFLOP per cell-update (torch's FlopCounterMode) and the float32 ceiling
    against this CPU's matmul rate (bench/roofline.py)."""
    device = torch.device(args.device)
    configs = [cell_config(args, seed) for seed in range(cells)]
    learners = [make_learner(config, device, "eager") for config in configs]
    population = PopulationLearner(learners)
    family = family_of_run(configs[0].run.games)
    replays = [random_replay(2_000, configs[0].env.num_envs, device, family) for _ in range(cells)]
    game = configs[0].run.games[0]
    with FlopCounterMode(display=False) as counter:
        population.update(replays, game)
    for _ in range(3):
        population.update(replays, game)
    updates, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        population.update(replays, game)
        updates += 1
    per_cell = (time.perf_counter() - started) / updates / cells
    return (
        roofline(counter.get_total_flops() / cells, per_cell, gemm_gflops())
        if device.type == "cpu"
        else {"seconds_per_update": per_cell}
    )


def worker_command(args: argparse.Namespace, seeds: list[int], threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.population",
        "--worker",
        ",".join(map(str, seeds)),
        "--threads",
        str(threads),
        *("--device", args.device, "--games", args.games, "--config", args.config, "--steps", str(args.steps)),
    ]


def run_workers(commands: list[list[str]]) -> float:
    """Start `commands` together; the sum of the rates they print."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=environment) for command in commands
    ]
    rates = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a benchmark worker failed ({process.returncode}): {' '.join(process.args)}")
        rates.append(float(out.decode().split()[-1]))
    return sum(rates)


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    cores = os.cpu_count() or 1
    for cells in args.cells:
        seeds = list(range(cells))
        bound = emulators_alone(args, cells)
        row = {"cells": cells, "emulators_alone": bound}
        update = run_update_worker(args, cells)
        row["together_1_thread"] = run_workers([worker_command(args, seeds, 1)])
        if cores > 1 and args.device == "cpu":
            row[f"together_{cores}_threads"] = run_workers([worker_command(args, seeds, cores)])
        if cores > 1 and cells >= cores and args.device == "cpu":  # one population per core, a thread each
            row[f"in_{cores}_populations"] = run_workers([worker_command(args, seeds[core::cores], 1) for core in range(cores)])
        if args.apart_up_to is None or cells <= args.apart_up_to:
            row["apart"] = run_workers([worker_command(args, [seed], 1) for seed in seeds])
        rows.append({**row, "batched_update": update})
        print(table_line(rows[-1]), file=sys.stderr, flush=True)
    return rows


def run_update_worker(args: argparse.Namespace, cells: int) -> dict[str, float]:
    """`batched_update` in a process of its own with one torch thread."""
    command = [*worker_command(args, list(range(cells)), 1), "--update-only"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def update_line(update: dict[str, float]) -> str:
    line = f"; batched update {update['seconds_per_update'] * 1e3:.2f} ms per cell"
    if "float32_ceiling" in update:
        achieved = f"{update['gflop_per_update']:.3f} GFLOP at {update['achieved_gflops']:.1f} GFLOP/s"
        line += f" ({achieved}: float32 ceiling {update['float32_ceiling']:.1f}x)"
    return line


def table_line(row: dict) -> str:
    def figure(key: str, value: float) -> str:
        versus = f", {value / row['apart']:.2f}x apart" if "apart" in row and key != "apart" else ""
        return f"{key} {value:,.0f} ({value / row['emulators_alone']:.1%} of the bound{versus})"

    figures = [figure(key, value) for key, value in row.items() if key not in ("cells", "emulators_alone", "batched_update")]
    return (
        f"P={row['cells']}: emulators alone {row['emulators_alone']:,.0f}; "
        + "; ".join(figures)
        + update_line(row["batched_update"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="1,2,4,8", help="population sizes, comma list (default 1,2,4,8)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--games", default="minatar:breakout,minatar:space_invaders", help="each cell's sequence")
    parser.add_argument("--config", default="configs/minatar.yaml")
    parser.add_argument(
        "--steps", type=int, default=8_000, help="agent steps per game and cell (default 8,000; learning from step 2,000 of each)"
    )
    parser.add_argument(
        "--apart-up-to",
        type=int,
        help="measure P processes apart only up to this P (default: every P)",
    )
    parser.add_argument("--threads", type=int, default=1, help="(worker) torch threads")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--update-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="runs/bench/population.json")
    args = parser.parse_args(argv)
    if args.worker:
        configure_threads(args.threads, torch.device(args.device))
        seeds = [int(seed) for seed in args.worker.split(",")]
        print(json.dumps(batched_update(args, len(seeds))) if args.update_only else train_population(args, seeds))
        return 0
    args.cells = [int(cells) for cells in args.cells.split(",")]
    rows = measure(args)
    print("\n".join(table_line(row) for row in rows))
    record = {
        "device": args.device,
        "games": args.games,
        "config": args.config,
        "steps_per_game": args.steps,
        "cores": os.cpu_count(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
