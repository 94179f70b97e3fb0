"""Running a sweep's cells on Ray: one task per cell, on this machine or a cluster.

Each cell reserves `--cpus-per-cell` CPUs (one by default) and `--gpus-per-cell` GPUs (by default one
when the cluster has GPUs, else none); a fraction shares a GPU, so that one GPU host trains several
cells at once (0.25: four). Ray starts a cell only when what it reserves is free.

Each task runs the cell's commands (train.py or its resume, then evaluate.py) as subprocesses, all
output to the cell's log. Nothing here decides what a cell is; ewc_experiments/sweep_plan.py does.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from ewc_experiments.sweep_plan import EVALUATED, PlannedCell, SweepError, Task, cell_state, last_error
from ewc_training.errors import first_line

CPUS_PER_CELL = 1
"""By default each cell reserves one CPU. A cell runs torch on as many threads as it reserves CPUs:
more threads than reserved CPUs wait on each other (two torch threads on a busy 2-core machine were
measured ~70x slower than one)."""


def run_cell(
    commands: list[list[str]], root: str, log: str, threads: int = CPUS_PER_CELL, keep_going: bool = False
) -> tuple[int, float]:
    """On a Ray worker: the cell's commands in order, all output to its log, stopping at the first failure
    (with `keep_going`, as for cells packed into one process, running the rest and returning the first
    failure's status: one cell that diverged must not keep the others from their evaluations).

    Returns the exit status (0, or the failing command's) and the seconds it took. The worker's
    environment carries the GPU Ray gave the cell (CUDA_VISIBLE_DEVICES). When the sweep stops
    (Ctrl-C, SIGTERM), Ray ends its workers and their subprocesses with them; train.py writes its
    checkpoints atomically, so the same command again resumes from the last one.
    """
    started = time.monotonic()
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    first_failure = 0
    with open(log, "w") as output:
        for command in commands:
            output.write(f"$ {shlex.join(command)}\n")
            output.flush()
            status = subprocess.run(
                [sys.executable, *command], cwd=root, env=environment, stdout=output, stderr=subprocess.STDOUT
            ).returncode
            if status != 0 and not keep_going:
                return status, time.monotonic() - started
            first_failure = first_failure or status
    return first_failure, time.monotonic() - started


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


def cell_reservation(resources: dict[str, float], gpus_per_cell: float | None, cpus_per_cell: int) -> tuple[float, int]:
    """The GPUs each cell reserves (None: one when the cluster has any, else none), and how many
    cells the cluster runs at once. A cell that no node can hold is a SweepError: Ray would wait
    for it without end."""
    gpus_here, cpus_here = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    gpus = (1.0 if gpus_here else 0.0) if gpus_per_cell is None else gpus_per_cell
    if gpus > gpus_here:
        raise SweepError(f"each cell asks for {gpus:g} GPUs (--gpus-per-cell) but the Ray cluster has {gpus_here:g}")
    if cpus_per_cell > cpus_here:
        raise SweepError(f"each cell asks for {cpus_per_cell} CPUs (--cpus-per-cell) but the Ray cluster has {cpus_here:g}")
    at_once = int(cpus_here // cpus_per_cell)
    if gpus:
        at_once = min(at_once, math.floor(gpus_here / gpus + 1e-9))
    return gpus, at_once


def run_on_ray(
    tasks: list[Task],
    address: str | None,
    root: Path,
    gpus_per_cell: float | None = None,
    cpus_per_cell: int = CPUS_PER_CELL,
) -> dict[str, str]:
    """Run every task (a cell, or cells packed into one process: sweep_plan.pack_cells) as one Ray task,
    reserving `gpus_per_cell` GPUs (cell_reservation) and `cpus_per_cell` CPUs.

    Returns cell name -> why it failed ("" when it succeeded). A task is never retried: the
    same command again resumes what a lost worker left.
    """
    ray = start_ray(address)
    try:
        resources = ray.cluster_resources()
        gpus, at_once = cell_reservation(resources, gpus_per_cell, cpus_per_cell)
        packed = max(len(task.cells) for task in tasks)
        per = f"each process ({packed} cells at most) takes" if packed > 1 else "each cell takes"
        print(
            f"Ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; {per} {cpus_per_cell} CPU(s) "
            f"and {gpus:g} GPU(s): up to {at_once} {'processes' if packed > 1 else 'cells'} at once",
            file=sys.stderr,
        )
        whole = gpus.is_integer()  # Ray takes a fraction below 1, whole numbers above
        remote = ray.remote(run_cell).options(num_cpus=cpus_per_cell, num_gpus=int(gpus) if whole else gpus, max_retries=0)
        pending = {
            remote.remote(task.commands, str(root), str(task.log), cpus_per_cell, len(task.cells) > 1): task for task in tasks
        }
        errors: dict[str, str] = {}
        total = sum(len(task.cells) for task in tasks)
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(done)
            for cell in task.cells[1:]:
                if task.log.is_file():  # absent when Ray lost the task before it began
                    shutil.copyfile(task.log, cell.log)  # every member's log holds the whole process's output
            for cell in task.cells:
                error, seconds = task_outcome(ray, done, cell)
                if error and len(task.cells) > 1 and cell_state(cell.run_dir, cell.cell.order) == EVALUATED:
                    error = ""  # another cell of its process failed; this one was trained and evaluated
                errors[cell.cell.name] = error
                outcome = f"failed: {error} (log: {cell.log})" if error else "evaluated"
                print(f"[{len(errors)}/{total}] {cell.cell.name}: {outcome} ({seconds:.0f} s)", file=sys.stderr, flush=True)
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
