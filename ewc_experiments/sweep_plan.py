"""A sweep's plan: the grid of train.py runs (orders x methods x lambda x seeds) and where each stands.

    <sweep>/cells/<cell>/     one ordinary train.py run directory per cell (config.yaml, checkpoints/, eval/)
    <sweep>/logs/<cell>.log   what its train.py and evaluate.py printed the last time it ran
    <sweep>/report.md, cells.csv, mean_hns.png   the aggregated report (ewc_experiments/sweep_report.py)

A cell's name comes from the cell alone, never from the clock, so that running the same sweep again
finds its cells: an evaluated one is skipped, a finished one only evaluated, an interrupted one
resumed with `train.py --resume`. Nothing here needs Ray; sweep.py hands the commands built here to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from agents.ewc.methods import METHODS, has_penalty, rehearses
from envs.games import parse_games
from ewc_evaluation.config import EvalConfig
from ewc_experiments.cli import config_from_train_args, parse_train_args
from ewc_experiments.eval_report import eval_folder
from ewc_experiments.sequences import draw_sequence, parse_sequence_rule
from ewc_training import run_dir as paths
from ewc_training.config import Config, build_config, config_from_dict, load_yaml

ORDER_SEED = 0
"""Seeds the draw of `N-random` game orders: a re-run, or a larger N, draws the same orders first."""
EVAL_SEED = 0
"""Every cell is scored on the same episode starts, so cells differ by their network alone."""

NEW, INTERRUPTED, TRAINED, EVALUATED = "new", "interrupted", "trained", "evaluated"
"""Where a cell stands: nothing worth keeping yet; has a checkpoint short of the last game; has
its last game-end checkpoint; has that and its evaluation (eval/eval.json without errors)."""


class SweepError(ValueError):
    """A sweep that cannot be run as asked; the message says which argument or cell."""


@dataclass(frozen=True)
class Cell:
    """One train.py run of the sweep."""

    order: tuple[str, ...]
    method: str
    ewc_lambda: float | None
    """None for `finetune`, which has no penalty to weigh."""
    seed: int

    @property
    def name(self) -> str:
        """`<games>-<method>[-lambda<λ>]-s<seed>`, e.g. `pong-breakout-ewc-lambda400-s0`."""
        strength = "" if self.ewc_lambda is None else f"-lambda{self.ewc_lambda:g}"
        return f"{order_name(self.order)}-{self.method}{strength}-s{self.seed}"


MODULATED = "-modulated"
"""A method name ending so (`ewc-modulated`) is that method with per-game biases and gains on every layer
(`network.per_game_modulation`, as in the EWC paper's Atari agent): a baseline of its own, so its
cells carry it in their names and never mix with the plain method's."""


def split_method(method: str) -> tuple[str, bool]:
    """`ewc-modulated` -> ("ewc", True); `ewc` -> ("ewc", False)."""
    if method.endswith(MODULATED):
        return method.removesuffix(MODULATED), True
    return method, False


def method_name(method: str, modulated: bool) -> str:
    """The inverse of `split_method`: what a cell of `method`, with or without modulation, is called."""
    return method + (MODULATED if modulated else "")


def uses_lambda(method: str) -> bool:
    """Every method with a penalty (with or without modulation or replay) weighs it with lambda."""
    return has_penalty(split_method(method)[0])


def order_name(order: tuple[str, ...] | list[str]) -> str:
    """The games joined by `-`; a long sequence is shortened with a hash, so names stay distinct."""
    joined = paths.path_name("-".join(order))
    if len(joined) <= 80:
        return joined
    digest = hashlib.sha1(",".join(order).encode()).hexdigest()[:8]
    return f"{order[0]}-and-{len(order) - 1}-more-{digest}"


def expand_orders(games: list[str], spec: str) -> list[tuple[str, ...]]:
    """The game orders a sweep trains: `given`, `both` (given and reversed) or `N-random`.

    `N-random` draws N distinct orders from a fixed seed, so that the same sweep finds the same
    cells again and `5-random` extends `3-random` instead of replacing it.
    """
    given = tuple(games)
    if spec == "given":
        return [given]
    if spec == "both":
        return list(dict.fromkeys([given, given[::-1]]))  # a palindrome has one order
    count, _, kind = spec.partition("-")
    if kind != "random" or not count.isdigit() or int(count) < 1:
        raise SweepError(f"--orders must be given, both or N-random (e.g. 3-random), got {spec!r}")
    possible = distinct_orders(games)
    if int(count) > possible:
        raise SweepError(f"--orders {spec}: {', '.join(games)} can be ordered in only {possible} distinct ways")
    draw, orders = random.Random(ORDER_SEED), []
    while len(orders) < int(count):
        order = tuple(draw.sample(games, len(games)))
        if order not in orders:
            orders.append(order)
    return orders


def distinct_orders(games: list[str]) -> int:
    """Distinct permutations of a sequence in which a game may repeat: n! / prod(repeats!)."""
    repeats = math.prod(math.factorial(count) for count in Counter(games).values())
    return math.factorial(len(games)) // repeats


def expand_grid(orders: list[tuple[str, ...]], methods: list[str], lambdas: list[float], seeds: list[int]) -> list[Cell]:
    """Every (order, method, lambda, seed); fine-tuning gets one cell per order and seed, not one per lambda."""
    return [
        Cell(order, method, strength, seed)
        for order in orders
        for method in methods
        for strength in (lambdas if uses_lambda(method) else [None])
        for seed in seeds
    ]


def drawn_sequence_grid(games: list[str], rule: str, methods: list[str], lambdas: list[float], seeds: list[int]) -> list[Cell]:
    """`--sequence random:N`: each seed trains the order train.py --sequence draws for it, every
    method and lambda of that seed the same one (ewc_experiments/sequences.py)."""
    segments = parse_sequence_rule(rule)
    return [
        cell for seed in seeds for cell in expand_grid([tuple(draw_sequence(games, segments, seed))], methods, lambdas, [seed])
    ]


def train_arguments(cell: Cell, preset: Path | None, overrides: list[str], device: str | None = None) -> list[str]:
    """The train.py flags of a fresh cell; the sweep's --config, --device and --set go to every cell."""
    method, modulated = split_method(cell.method)
    arguments = ["--games", ",".join(cell.order), "--method", method, "--seed", str(cell.seed)]
    if cell.ewc_lambda is not None:
        arguments += ["--ewc-lambda", repr(cell.ewc_lambda)]
    if modulated:
        arguments += ["--set", "network.per_game_modulation=true"]
    if preset is not None:
        arguments += ["--config", str(preset)]
    if device is not None:
        arguments += ["--device", device]
    for assignment in overrides:
        arguments += ["--set", assignment]
    return arguments


def cell_as_configured(cell: Cell, config: Config) -> Cell:
    """A plain method's cell under a config with per-game modulation on (the paper preset, or a --set)
    is that method's `-modulated` cell: its name, and every report, say what it trains."""
    method, modulated = split_method(cell.method)
    if config.network.per_game_modulation and not modulated:
        return dataclasses.replace(cell, method=method_name(method, True))
    return cell


def check_config_is_the_cell(cell: Cell, config: Config) -> None:
    """Refuse a --set that changes what the cell's name says (it would train another cell under it).

    `--set` has the last word in train.py, over --games too, so `run.games` is checked like the rest.
    """
    method, modulated = split_method(cell.method)
    named = [
        ("run.games", "--games", list(cell.order), config.run.games),
        ("run.seed", "--seeds", cell.seed, config.run.seed),
        ("consolidation.method", "--methods", method, config.consolidation.method),
    ]
    if cell.ewc_lambda is not None:
        named.append(("consolidation.ewc_lambda", "--ewc-lambda", cell.ewc_lambda, config.consolidation.ewc_lambda))
    for key, flag, wanted, got in named:
        if wanted != got:
            raise SweepError(f"--set {key} would override the sweep's {flag}; sweep it with {flag} instead")
    if modulated and not config.network.per_game_modulation:
        raise SweepError(
            f"network.per_game_modulation is off (a --set or the --config) for a {cell.method} cell; "
            f"drop {MODULATED} from --methods, or the setting"
        )


def check_eval_protocol(protocol: EvalConfig) -> None:
    """The cells' final evaluation uses their eval section; catch what evaluate.py would refuse after training."""
    if protocol.episodes < 1 or protocol.max_episode_frames < 1 or not 0 <= protocol.epsilon <= 1:
        raise SweepError(
            "eval.episodes and eval.max_episode_frames must be positive and eval.epsilon in [0, 1]: "
            "the sweep evaluates every cell with them"
        )


def cell_dir(sweep_dir: Path, cell: Cell) -> Path:
    return sweep_dir / "cells" / cell.name


def log_path(sweep_dir: Path, cell: Cell) -> Path:
    return sweep_dir / "logs" / f"{cell.name}.log"


def final_checkpoint(run_dir: Path, order: tuple[str, ...]) -> Path:
    return paths.game_end_checkpoint(run_dir, len(order), order[-1])


def evaluation_file(run_dir: Path) -> Path:
    """What evaluate.py writes into a run; the report is made from it."""
    return eval_folder(run_dir) / "eval.json"


def read_evaluation(run_dir: Path) -> dict | None:
    """A cell's eval.json, or None when it has none that is whole (no rows, or checkpoints it could not score)."""
    try:
        evaluation = json.loads(evaluation_file(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return evaluation if evaluation.get("rows") and not evaluation.get("errors") else None


def cell_state(run_dir: Path, order: tuple[str, ...]) -> str:
    """NEW, INTERRUPTED, TRAINED or EVALUATED, read from the files train.py and evaluate.py leave.

    A cell restored from saved results (results_page --restore-into: config.yaml and an eval.json of
    the last game's end, no checkpoints) is EVALUATED too, and skipped like one trained here.
    """
    evaluated = evaluates_the_end(read_evaluation(run_dir), order)
    if final_checkpoint(run_dir, order).is_file():
        return EVALUATED if evaluated else TRAINED
    if (run_dir / "config.yaml").is_file() and paths.run_checkpoints(run_dir):
        return INTERRUPTED
    return EVALUATED if evaluated else NEW  # a run stopped before its first checkpoint has nothing to resume from


def evaluates_the_end(evaluation: dict | None, order: tuple[str, ...]) -> bool:
    """Whether an eval.json scores the checkpoint saved at the end of the sequence's last game."""
    rows = evaluation["rows"] if evaluation else []
    return any(row["games_done"] == len(order) and row["step_in_game"] == 0 for row in rows)


HOW_NOT_WHAT = {"run.device", "agent.update_mode"}
"""Keys that choose how a cell computes, not what: every device and update mode gives the same results
to float32 rounding, so a cell trained with another of them is still this sweep's."""


def check_saved_config(run_dir: Path, config: Config) -> None:
    """Refuse to skip or resume a cell that was trained with another config than this sweep's."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved, wanted = config_from_dict(load_yaml(saved_file)).to_dict(), config.to_dict()
    changed = [
        f"{section}.{key}"
        for section in wanted
        for key in wanted[section]
        if saved[section][key] != wanted[section][key] and f"{section}.{key}" not in HOW_NOT_WHAT
    ]
    if changed:
        raise SweepError(
            f"{run_dir} was trained with other settings ({', '.join(changed)}); "
            "pass another --sweep-dir, or delete that cell to train it again"
        )


def cell_commands(state: str, run_dir: Path, arguments: list[str], config: Config) -> list[list[str]]:
    """The scripts (with their arguments) a worker runs for a cell in `state`, in order; none once evaluated.

    A fresh start replaces what a run stopped before its first checkpoint left (--overwrite).
    """
    if state == EVALUATED:
        return []
    train = {
        NEW: [["train.py", *arguments, "--run-dir", str(run_dir), *(["--overwrite"] if run_dir.exists() else [])]],
        INTERRUPTED: [["train.py", "--resume", str(run_dir)]],
        TRAINED: [],
    }[state]
    protocol = config.eval
    evaluate = [
        "evaluate.py",
        str(run_dir),
        "--episodes",
        str(protocol.episodes),
        "--epsilon",
        repr(protocol.epsilon),
        "--max-episode-frames",
        str(protocol.max_episode_frames),
        "--seed",
        str(EVAL_SEED),
        "--device",
        config.run.device,
    ]
    return [*train, evaluate]


def last_error(log: Path) -> str:
    """The line that says why a cell failed: its last `error:` line, else the log's last line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"no log at {log}"
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(empty log)"])[-1]


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
        if split_method(method)[0] not in METHODS:
            raise SweepError(
                f"unknown method {method!r} in --methods; choose from {', '.join(METHODS)}, "
                f"each also as <method>{MODULATED} (per-game biases and gains)"
            )
    return methods


def parse_lambdas(text: str | None, preset: Path | None, overrides: list[str]) -> list[float]:
    """--ewc-lambda, or the one lambda the config gives (so that the cells' names still say it)."""
    if text is None:
        return [build_config(preset, overrides).consolidation.ewc_lambda]
    lambdas = comma_list(text, float, "--ewc-lambda")
    if any(strength < 0 for strength in lambdas):
        raise SweepError(f"--ewc-lambda must be >= 0, got {text!r}")
    return lambdas


def parse_cell_resources(gpus: str | None, cpus: str, device: str | None = None) -> tuple[float | None, int]:
    """--gpus-per-cell and --cpus-per-cell: what each cell reserves in Ray.

    GPUs: 0 (a CPU-only cell), a fraction in (0, 1] (cells share a GPU: 0.25 puts four on one) or a
    whole number, as Ray allows; None leaves the choice to the cluster (one GPU when it has any),
    except with `--device cpu`, whose cells need none. CPUs: a whole number >= 1, also the cell's
    torch threads."""
    try:
        gpu_count = None if gpus is None else float(gpus)
    except ValueError:
        gpu_count = math.nan
    if gpu_count is not None and not (0 <= gpu_count <= 1 or (gpu_count > 1 and gpu_count.is_integer())):
        raise SweepError(f"--gpus-per-cell must be 0, a fraction in (0, 1] or a whole number of GPUs, got {gpus!r}")
    if gpu_count is None and device == "cpu":
        gpu_count = 0.0
    if not cpus.strip().isdigit() or int(cpus) < 1:
        raise SweepError(f"--cpus-per-cell must be a whole number >= 1, got {cpus!r}")
    return gpu_count, int(cpus)


@dataclass
class PlannedCell:
    cell: Cell
    run_dir: Path
    log: Path
    state: str
    commands: list[list[str]]
    """What a worker runs (train or resume, then evaluate); empty once the cell is evaluated."""


@dataclass
class Task:
    """What one worker runs: one cell, or several cells trained together in one process (a population,
    ewc_training/population.py), then each evaluated; all output goes to `log`, copied to every
    member's own log when the task ends."""

    cells: list[PlannedCell]
    commands: list[list[str]]
    log: Path


def pack_cells(planned: list[PlannedCell], cells_per_process: int) -> list[Task]:
    """The cells with something to run, packed `cells_per_process` at a time into one train.py (its
    `--cell` option) where they can step together: cells in the same state (new, or interrupted) of
    the same order, with the same network (modulated or not) and no rehearsal; seeds, methods and
    lambdas may differ. Everything else, and a cell that needs only its evaluation, runs alone."""
    tasks, packs = [], {}
    for cell in (p for p in planned if p.commands):
        method, modulated = split_method(cell.cell.method)
        trains = cell.commands[0][0] == "train.py"
        if cells_per_process == 1 or not trains or rehearses(method):
            tasks.append(Task([cell], cell.commands, cell.log))
            continue
        packs.setdefault((cell.state, cell.cell.order, modulated), []).append(cell)
    for members in packs.values():
        for start in range(0, len(members), cells_per_process):
            chunk = members[start : start + cells_per_process]
            train = ["train.py", *(part for cell in chunk for part in ("--cell", shlex.join(cell.commands[0][1:])))]
            evaluate = [command for cell in chunk for command in cell.commands[1:]]
            tasks.append(Task(chunk, [train, *evaluate] if len(chunk) > 1 else chunk[0].commands, chunk[0].log))
    return tasks


def plan_sweep(args: argparse.Namespace) -> tuple[Path, list[PlannedCell]]:
    """Every cell of sweep.py's `args`, its config resolved as train.py will resolve it, checked
    before anything runs."""
    preset = Path(args.config).resolve() if args.config else None  # workers run from the project root
    games = parse_games(args.games)
    methods = parse_methods(args.methods)
    lambdas = parse_lambdas(args.ewc_lambda, preset, args.overrides)
    seeds = comma_list(args.seeds, int, "--seeds")
    if args.sequence is None:
        grid = expand_grid(expand_orders(games, args.orders), methods, lambdas, seeds)
        default_name = order_name(grid[0].order)
    elif args.orders != "given":
        raise SweepError("--sequence draws each seed's order; drop --orders")
    else:
        grid = drawn_sequence_grid(games, args.sequence, methods, lambdas, seeds)
        default_name = f"{order_name(list(dict.fromkeys(games)))}-{args.sequence.replace(':', '')}"
    sweep_dir = Path(args.sweep_dir or Path("sweeps") / default_name).resolve()
    planned = []
    names = set()
    for cell in grid:
        arguments = train_arguments(cell, preset, args.overrides, args.device)
        config = config_from_train_args(parse_train_args(arguments))
        cell = cell_as_configured(cell, config)
        if cell.name in names:  # `ewc` under a preset with modulation on is `ewc-modulated`: asked for twice
            continue
        names.add(cell.name)
        check_config_is_the_cell(cell, config)
        check_eval_protocol(config.eval)
        run_dir = cell_dir(sweep_dir, cell)
        check_saved_config(run_dir, config)
        state = cell_state(run_dir, cell.order)
        commands = cell_commands(state, run_dir, arguments, config)
        planned.append(PlannedCell(cell, run_dir, log_path(sweep_dir, cell), state, commands))
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    return sweep_dir, planned


def describe(sweep_dir: Path, planned: list[PlannedCell]) -> str:
    count = {state: sum(p.state == state for p in planned) for state in (NEW, INTERRUPTED, TRAINED, EVALUATED)}
    return (
        f"sweep {sweep_dir}: {len(planned)} cells, {count[NEW]} to train, {count[INTERRUPTED]} to resume, "
        f"{count[TRAINED]} to evaluate, {count[EVALUATED]} already evaluated"
    )
