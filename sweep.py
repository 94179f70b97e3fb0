"""Run a grid of train.py runs on Ray (methods x lambda x seeds x game orders) and write one report.

    python sweep.py --games pong,breakout --methods ewc,l2,finetune --seeds 0,1,2 --ewc-lambda 100,400,1000
    python sweep.py --games pong,breakout --orders both --config configs/smoke.yaml
    python sweep.py --games pong,breakout --address <head>:6379     # a cluster started with `ray start --head`

Every cell is an ordinary train.py run in <sweep-dir>/cells/<cell>/, evaluated with evaluate.py when it
finishes; the sweep's report is <sweep-dir>/report.md, with mean_hns.png and cells.csv. The same command
again skips evaluated cells and resumes interrupted ones. Exit status: 0 when every cell is evaluated,
1 when some are not (the report names them), 2 for bad input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import train
from agents.consolidation import METHODS
from agents.sweep_plan import (
    EVALUATED, INTERRUPTED, NEW, TRAINED, Cell, SweepError, cell_commands, cell_dir, cell_state, check_config_is_the_cell,
    check_eval_protocol, check_saved_config, expand_grid, expand_orders, last_error, log_path, order_name, train_arguments,
)
from agents.sweep_report import PLOT, TABLE, cell_result, write_report
from config import build_config
from envs.games import parse_games

ROOT = Path(__file__).resolve().parent
CPUS_PER_CELL = 1
"""Each cell reserves one CPU and runs torch on one thread: more threads than reserved CPUs wait on
each other (two torch threads on a busy 2-core machine were measured ~70x slower than one)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", required=True, help="comma list, the training order; repeats revisit")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)} (default: all)")
    parser.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    parser.add_argument("--ewc-lambda", help="comma list of lambdas for every method but finetune (default: the config's)")
    parser.add_argument("--orders", default="given", help="game orders: given (default), both (and reversed) or N-random")
    parser.add_argument("--config", help="YAML preset for every cell, e.g. configs/smoke.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key in every cell (repeatable)")
    parser.add_argument("--sweep-dir", help="where the cells and the report go (default sweeps/<games>)")
    parser.add_argument("--address", help="join this Ray cluster (default: start Ray in this process)")
    return parser.parse_args(argv)


def comma_list(text: str, kind: type, flag: str) -> list:
    """A comma list of `kind`, repeats dropped; a bad item is a SweepError naming the flag."""
    try:
        values = [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise SweepError(f"{flag} must be a comma list of {kind.__name__} values, got {text!r}")
    return list(dict.fromkeys(values))


def parse_methods(text: str) -> list[str]:
    methods = comma_list(text, str, "--methods")
    for method in methods:
        if method not in METHODS:
            raise SweepError(f"unknown method {method!r} in --methods; choose from {', '.join(METHODS)}")
    return methods


def parse_lambdas(text: str | None, preset: Path | None, overrides: list[str]) -> list[float]:
    """--ewc-lambda, or the one lambda the config gives (so that the cells' names still say it)."""
    if text is None:
        return [build_config(preset, overrides).consolidation.ewc_lambda]
    lambdas = comma_list(text, float, "--ewc-lambda")
    if any(strength < 0 for strength in lambdas):
        raise SweepError(f"--ewc-lambda must be >= 0, got {text!r}")
    return lambdas


@dataclass
class PlannedCell:
    cell: Cell
    run_dir: Path
    log: Path
    state: str
    commands: list[list[str]]
    """What a worker runs (train or resume, then evaluate); empty once the cell is evaluated."""


def plan(args: argparse.Namespace) -> tuple[Path, list[PlannedCell]]:
    """Every cell with its config resolved as train.py will resolve it, checked before anything runs."""
    preset = Path(args.config).resolve() if args.config else None  # workers run from the project root
    orders = expand_orders(parse_games(args.games), args.orders)
    grid = expand_grid(orders, parse_methods(args.methods), parse_lambdas(args.ewc_lambda, preset, args.overrides),
                       comma_list(args.seeds, int, "--seeds"))
    sweep_dir = Path(args.sweep_dir or Path("sweeps") / order_name(orders[0])).resolve()
    planned = []
    for cell in grid:
        arguments = train_arguments(cell, preset, args.overrides)
        config = train.resolve_config(train.parse_args(arguments))
        check_config_is_the_cell(cell, config)
        check_eval_protocol(config.eval)
        run_dir = cell_dir(sweep_dir, cell)
        check_saved_config(run_dir, config)
        state = cell_state(run_dir, cell.order)
        commands = cell_commands(state, run_dir, arguments, config)
        planned.append(PlannedCell(cell, run_dir, log_path(sweep_dir, cell), state, commands))
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    return sweep_dir, planned


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
            status = subprocess.run([sys.executable, *command], cwd=root, env=environment, stdout=output,
                                    stderr=subprocess.STDOUT).returncode
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
        raise SweepError(f"nothing answers at --address {address}; start the cluster's head with `ray start --head` "
                         "and pass the address it prints (<head-ip>:6379)") from None


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
        hint = ("; a cluster with token authentication (what `ray start` sets up since Ray 2.59) "
                "also needs RAY_AUTH_MODE=token here") if address else ""
        raise SweepError(f"cannot {where}: {first_line(error)}{hint}") from None
    return ray


def run_on_ray(cells: list[PlannedCell], address: str | None) -> dict[str, str]:
    """Run every cell as one Ray task (one GPU each when the cluster has GPUs, else one CPU).

    Returns cell name -> why it failed ("" when it succeeded). A task is never retried: the
    same command again resumes what a lost worker left.
    """
    ray = start_ray(address)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        print(f"Ray: {int(resources.get('CPU', 0))} CPUs, {gpus} GPUs; each cell takes one {'GPU' if gpus else 'CPU'}",
              file=sys.stderr)
        task = ray.remote(run_cell).options(num_cpus=CPUS_PER_CELL, num_gpus=1 if gpus else 0, max_retries=0)
        pending = {task.remote(planned.commands, str(ROOT), str(planned.log)): planned for planned in cells}
        errors: dict[str, str] = {}
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            planned = pending.pop(done)
            error, seconds = task_outcome(ray, done, planned)
            errors[planned.cell.name] = error
            outcome = f"failed: {error} (log: {planned.log})" if error else "evaluated"
            print(f"[{len(errors)}/{len(cells)}] {planned.cell.name}: {outcome} ({seconds:.0f} s)",
                  file=sys.stderr, flush=True)
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


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def describe(sweep_dir: Path, planned: list[PlannedCell]) -> str:
    count = {state: sum(p.state == state for p in planned) for state in (NEW, INTERRUPTED, TRAINED, EVALUATED)}
    return (f"sweep {sweep_dir}: {len(planned)} cells, {count[NEW]} to train, {count[INTERRUPTED]} to resume, "
            f"{count[TRAINED]} to evaluate, {count[EVALUATED]} already evaluated")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sweep_dir, planned = plan(args)
        print(describe(sweep_dir, planned), file=sys.stderr, flush=True)
        to_run = [cell for cell in planned if cell.commands]
        errors = run_on_ray(to_run, args.address) if to_run else {}
    except train.USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the same command again resumes the unfinished cells", file=sys.stderr)
        return 130
    results = [cell_result(p.cell, p.run_dir, errors.get(p.cell.name, "")) for p in planned]
    report = write_report(sweep_dir, results)
    print(report.read_text())
    print(f"wrote {report}, {PLOT} and {TABLE} beside it", file=sys.stderr)
    return 0 if all(result.metrics for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
