"""Running a sweep's cells on Ray: one task per cell, one CPU (or GPU) each, on this machine or a cluster.

Each task runs the cell's commands (train.py or its resume, then evaluate.py) as subprocesses, all
output to the cell's log. Nothing here decides what a cell is; ewc_experiments/sweep_plan.py does.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from ewc_experiments.sweep_plan import PlannedCell, SweepError, last_error
from ewc_training.errors import first_line

CPUS_PER_CELL = 1
"""Each cell reserves one CPU and runs torch on one thread: more threads than reserved CPUs wait on
each other (two torch threads on a busy 2-core machine were measured ~70x slower than one)."""


def run_cell(commands: list[list[str]], root: str, log: str) -> tuple[int, float]:
    """On a Ray worker: the cell's commands in order, all output to its log, stopping at the first failure.

    Returns the exit status (0, or the failing command's) and the seconds it took. The worker's
    environment carries the GPU Ray gave the cell (CUDA_VISIBLE_DEVICES). When the sweep stops
    (Ctrl-C, SIGTERM), Ray ends its workers and their subprocesses with them; train.py writes its
    checkpoints atomically, so the same command again resumes from the last one.
    """
    started = time.monotonic()
    environment = {**os.environ, "OMP_NUM_THREADS": str(CPUS_PER_CELL)}
    with open(log, "w") as output:
        for command in commands:
            output.write(f"$ {shlex.join(command)}\n")
            output.flush()
            status = subprocess.run(
                [sys.executable, *command], cwd=root, env=environment, stdout=output, stderr=subprocess.STDOUT
            ).returncode
            if status != 0:
                return status, time.monotonic() - started
    return 0, time.monotonic() - started


def check_address(address: str) -> None:
    """Fail in seconds at an address where nothing listens: ray.init retries it without end (measured:
    still retrying after 9 minutes, and deaf to SIGTERM)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError):
        raise SweepError(
            f"nothing answers at --address {address}; start the cluster's head with `ray start --head` "
            "and pass the address it prints (<head-ip>:6379)"
        ) from None


def start_ray(address: str | None):
    """Ray in this process (address "local": never a cluster someone else started here), or the cluster at `address`."""
    try:
        import ray
    except ImportError:
        raise SweepError("sweeps run on Ray: pip install 'ewc-atari[sweep]'") from None
    if address:
        check_address(address)
    try:
        ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        where = f"join the Ray cluster at {address}" if address else "start Ray"
        hint = (
            (
                "; a cluster with token authentication (what `ray start` sets up since Ray 2.59) "
                "also needs RAY_AUTH_MODE=token here"
            )
            if address
            else ""
        )
        raise SweepError(f"cannot {where}: {first_line(error)}{hint}") from None
    return ray


def run_on_ray(cells: list[PlannedCell], address: str | None, root: Path) -> dict[str, str]:
    """Run every cell as one Ray task (one GPU each when the cluster has GPUs, else one CPU).

    Returns cell name -> why it failed ("" when it succeeded). A task is never retried: the
    same command again resumes what a lost worker left.
    """
    ray = start_ray(address)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        print(
            f"Ray: {int(resources.get('CPU', 0))} CPUs, {gpus} GPUs; each cell takes one {'GPU' if gpus else 'CPU'}",
            file=sys.stderr,
        )
        task = ray.remote(run_cell).options(num_cpus=CPUS_PER_CELL, num_gpus=1 if gpus else 0, max_retries=0)
        pending = {task.remote(planned.commands, str(root), str(planned.log)): planned for planned in cells}
        errors: dict[str, str] = {}
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            planned = pending.pop(done)
            error, seconds = task_outcome(ray, done, planned)
            errors[planned.cell.name] = error
            outcome = f"failed: {error} (log: {planned.log})" if error else "evaluated"
            print(f"[{len(errors)}/{len(cells)}] {planned.cell.name}: {outcome} ({seconds:.0f} s)", file=sys.stderr, flush=True)
        return errors
    finally:
        ray.shutdown()


def task_outcome(ray, done, planned: PlannedCell) -> tuple[str, float]:
    """Why a finished task's cell failed ("" when it did not), and the seconds it ran."""
    try:
        status, seconds = ray.get(done)
    except ray.exceptions.RayError as error:  # its worker or node died
        return f"Ray lost the task: {first_line(error)}", 0.0
    return ("" if status == 0 else last_error(planned.log)), seconds
