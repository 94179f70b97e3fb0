"""Train one DQN agent on a sequence of Atari games, consolidating each before the next.

    python train.py --games pong,breakout
    python train.py --games pong,breakout,pong --method online-ewc --ewc-lambda 1000 --seed 1
    python train.py --games pong,breakout --method ewc,finetune --seeds 0-3     (8 runs in one process)
    python train.py --config configs/smoke.yaml --set agent.learning_rate=3e-4
    python train.py --resume runs/<name>
    python train.py --games pong,breakout --method finetune --branch-from runs/<name>/checkpoints/after_1_pong.pt

Every option is a config key (ewc_training/config.py); flags here are shortcuts for the common ones
and `--set section.key=value` reaches the rest. Precedence: defaults < --config YAML < flags < --set.
Several methods or seeds make one run (a cell) each, trained together in one process as one batched
computation (ewc_training/population.py); each cell is an ordinary run directory. A resumed run takes
its own config.yaml. Ctrl-C (SIGINT) or SIGTERM stops after the current update
with checkpoints/latest.pt written and the resume command printed; the exit status is then 128 +
the signal number (130, 143). A finished run ends with the `python evaluate.py <run dir>` command
that scores it. Bad input ends with one `error:` line and status 2.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from envs.games import available_games
from ewc_experiments.cli import USER_ERRORS, cell_configs_from_train_args, fail, parse_train_args
from ewc_training.device import configure_threads, resolve_device
from ewc_training.launch import (
    check_distinct,
    check_replay_fits,
    new_run_dirs,
    resume_run,
    start_runs,
    train_until_done_or_stopped,
)
from ewc_training.population import PopulationTrainer, population_groups
from ewc_training.run_dir import run_dir_of


def resume_command(run_dirs, device: str | None) -> str:
    flag = f" --device {shlex.quote(device)}" if device else ""
    dirs = " ".join(shlex.quote(str(run_dir)) for run_dir in run_dirs)
    return f"python {shlex.quote(sys.argv[0])} --resume {dirs}{flag}"


def evaluate_command(run_dir) -> str:
    """The command that scores a finished run: evaluate.py beside the train.py that was run."""
    script = os.path.join(os.path.dirname(sys.argv[0]), "evaluate.py")
    return f"python {shlex.quote(script)} {shlex.quote(str(run_dir))}"


def main(argv: list[str] | None = None) -> int:
    args = parse_train_args(argv, __doc__.split("\n\n")[0])
    if args.list_games:
        print("\n".join(available_games()))
        return 0
    try:
        commands = [parse_train_args(shlex.split(cell)) for cell in args.cells] if args.cells else [args]
        return train_cells(cells_of(commands), args)
    except USER_ERRORS as error:
        return fail(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cells_of(commands) -> list:
    """The runs (cells) that train.py command lines name, resumed or new (methods x seeds each), every
    check of every one made before a new run's folder is written: configs, distinct folders, memory."""
    new = []
    for args in (args for args in commands if not args.resume):
        configs = cell_configs_from_train_args(args)
        new += [(args, config, run_dir) for config, run_dir in zip(configs, new_run_dirs(configs, args.run_dir))]
    requested = [(path, args.device) for args in commands if args.resume for path in args.resume]
    check_distinct([run_dir_of(Path(path)) for path, _ in requested] + [run_dir for _, _, run_dir in new])
    resumed = [resume_run(path, device) for path, device in requested]
    configs = [cell.config for cell in resumed] + [config for _, config, _ in new]
    check_replay_fits(configs[0], resolve_device(configs[0].run.device), cells=configs)
    started = []
    for args in commands:  # each command line's new runs, with its --overwrite and --branch-from
        runs = [(config, run_dir) for owner, config, run_dir in new if owner is args]
        started += start_runs(runs, args.overwrite, args.branch_from) if runs else []
    return resumed + started


def train_cells(cells, args) -> int:
    """Every unfinished cell, in populations of those that can step together; 0 when all finished, 1
    when a cell diverged (each says so in an `error:` line at the end)."""
    for cell in cells:
        if cell.position.game_index >= len(cell.games):
            print(
                f"{cell.run_dir} has finished all {len(cell.games)} games; nothing to resume; "
                f"score it with: {evaluate_command(cell.run_dir)}",
                file=sys.stderr,
            )
    unfinished = [cell for cell in cells if cell.position.game_index < len(cell.games)]
    diverged = []
    for group in population_groups(unfinished):
        for cell in group:
            print(f"run directory: {cell.run_dir}  (tensorboard --logdir {cell.run_dir.parent})", file=sys.stderr)
        if len(group) > 1:
            print(f"training {len(group)} cells in one process", file=sys.stderr)
        print(configure_threads(args.threads, group[0].device), file=sys.stderr)  # once every check has passed
        population = PopulationTrainer(group)
        going = [cell.run_dir for cell in unfinished if all(cell is not left for left, _ in diverged)]
        status = train_until_done_or_stopped(population, resume_command(going, args.device if args.resume else None))
        if status != 0:
            return status
        diverged += population.diverged
        for cell in population.cells:
            print(
                f"finished all {len(cell.games)} games; the run is in {cell.run_dir}; "
                f"score it with: {evaluate_command(cell.run_dir)}",
                file=sys.stderr,
            )
    for cell, error in diverged:
        print(f"error: {cell.run_dir}: {error}", file=sys.stderr)
    return 1 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
