"""Train one DQN agent on a sequence of Atari games, consolidating each before the next.

    python train.py --games pong,breakout
    python train.py --games pong,breakout,pong --method online-ewc --ewc-lambda 1000 --seed 1
    python train.py --config configs/smoke.yaml --set agent.learning_rate=3e-4
    python train.py --resume runs/<name>
    python train.py --games pong,breakout --method finetune --branch-from runs/<name>/checkpoints/after_1_pong.pt

Every option is a config key (ewc_training/config.py); flags here are shortcuts for the common ones
and `--set section.key=value` reaches the rest. Precedence: defaults < --config YAML < flags < --set.
A resumed run takes its own config.yaml. Ctrl-C (SIGINT) or SIGTERM stops after the current update
with checkpoints/latest.pt written and the resume command printed; the exit status is then 128 +
the signal number (130, 143). A finished run ends with the `python evaluate.py <run dir>` command
that scores it. Bad input ends with one `error:` line and status 2.
"""

from __future__ import annotations

import os
import shlex
import sys

from envs.games import available_games
from ewc_experiments.cli import USER_ERRORS, config_from_train_args, fail, parse_train_args
from ewc_training.device import configure_threads
from ewc_training.launch import resume_run, start_run, train_until_done_or_stopped


def resume_command(run_dir, device: str | None) -> str:
    flag = f" --device {shlex.quote(device)}" if device else ""
    return f"python {shlex.quote(sys.argv[0])} --resume {shlex.quote(str(run_dir))}{flag}"


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
        if args.resume:
            trainer = resume_run(args.resume, args.device)
        else:
            trainer = start_run(config_from_train_args(args), args.run_dir, args.overwrite, args.branch_from)
        score = f"score it with: {evaluate_command(trainer.run_dir)}"
        if trainer.position.game_index >= len(trainer.games):
            print(f"{trainer.run_dir} has finished all {len(trainer.games)} games; nothing to resume; {score}", file=sys.stderr)
            return 0
        print(f"run directory: {trainer.run_dir}  (tensorboard --logdir {trainer.run_dir.parent})", file=sys.stderr)
        print(configure_threads(args.threads, trainer.device), file=sys.stderr)  # once every check has passed
        status = train_until_done_or_stopped(trainer, resume_command(trainer.run_dir, args.device if args.resume else None))
        if status == 0:
            print(f"finished all {len(trainer.games)} games; the run is in {trainer.run_dir}; {score}", file=sys.stderr)
        return status
    except USER_ERRORS as error:
        return fail(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
