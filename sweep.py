"""Run a grid of train.py runs on Ray (methods x lambda x seeds x game orders) and write one report.

    python sweep.py --games pong,breakout --methods ewc,l2,finetune --seeds 0,1,2 --ewc-lambda 100,400,1000
    python sweep.py --games pong,breakout --orders both --config configs/smoke.yaml
    python sweep.py --games pong,breakout,enduro --sequence random:6 --seeds 0,1,2 --methods ewc,finetune
    python sweep.py --games pong,breakout --address <head>:6379     # a cluster started with `ray start --head`
    python sweep.py --games pong,breakout --device cuda --gpus-per-cell 0.25 --cpus-per-cell 2   # 4 cells share a GPU
    python sweep.py --games pong,breakout --methods ewc,finetune --seeds 0,1,2,3 --cells-per-process 8   # one process

Every cell is an ordinary train.py run in <sweep-dir>/cells/<cell>/, evaluated with evaluate.py when it
finishes; the sweep's report is <sweep-dir>/report.md, with mean_hns.png and cells.csv, and the cells'
summed agent steps/s (the sweep's throughput when they train together). The same command again skips
evaluated cells and resumes interrupted ones. Exit status: 0 when every cell is evaluated,
1 when some are not (the report names them), 2 for bad input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.ewc.methods import METHODS
from ewc_experiments.cli import USER_ERRORS, OneLineParser, add_set_option, fail, positive_int
from ewc_experiments.sweep_plan import MODULATED, describe, pack_cells, parse_cell_resources, plan_sweep
from ewc_experiments.sweep_ray import run_on_ray
from ewc_experiments.sweep_report import PLOT, TABLE, cell_result, write_report

ROOT = Path(__file__).resolve().parent
"""Where the cells' workers run train.py and evaluate.py."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", required=True, help="comma list, the training order; repeats revisit")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma list of {', '.join(METHODS)}, each also as <method>{MODULATED} (with per-game biases and gains) "
        "(default: all, unmodulated)",
    )
    parser.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    parser.add_argument("--ewc-lambda", help="comma list of lambdas for every method but finetune (default: the config's)")
    parser.add_argument("--orders", default="given", help="game orders: given (default), both (and reversed) or N-random")
    parser.add_argument(
        "--sequence",
        metavar="random:SEGMENTS",
        help="each seed trains the order train.py --sequence draws for it (every method the same one)",
    )
    parser.add_argument("--config", help="YAML preset for every cell, e.g. configs/smoke.yaml")
    add_set_option(parser, "override a config key in every cell (repeatable)")
    parser.add_argument("--sweep-dir", help="where the cells and the report go (default sweeps/<games>)")
    parser.add_argument("--address", help="join this Ray cluster (default: start Ray in this process)")
    parser.add_argument("--device", help="every cell's train.py and evaluate.py device: auto, cuda or cpu (default: config's)")
    parser.add_argument(
        "--gpus-per-cell",
        metavar="GPUS",
        help="GPUs each cell reserves: 0, a fraction in (0, 1] that shares a GPU among cells (0.25: four at "
        "once) or a whole number (default: 1 when the Ray cluster has GPUs, else 0; 0 with --device cpu)",
    )
    parser.add_argument(
        "--cpus-per-cell", metavar="CPUS", default="1", help="CPUs each cell reserves, and its torch threads (default 1)"
    )
    parser.add_argument(
        "--cells-per-process",
        type=positive_int,
        default=1,
        metavar="N",
        help="train up to N cells of the same order together in one process, one batched computation "
        "(docs/runs.md); they then share what --cpus-per-cell and --gpus-per-cell reserve (default 1)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gpus_per_cell, cpus_per_cell = parse_cell_resources(args.gpus_per_cell, args.cpus_per_cell, args.device)
        sweep_dir, planned = plan_sweep(args)
        print(describe(sweep_dir, planned), file=sys.stderr, flush=True)
        tasks = pack_cells(planned, args.cells_per_process)
        errors = run_on_ray(tasks, args.address, ROOT, gpus_per_cell, cpus_per_cell) if tasks else {}
    except USER_ERRORS as error:
        return fail(error)
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
