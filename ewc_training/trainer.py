"""One run: one agent, one game after another, consolidating at every boundary.

    for each game k in the sequence:
        fresh replay and epsilon schedule; act in N emulators, learn from replay (Double DQN)
        at the end: consolidate_game (Fisher from this game's replay -> penalty, probe set), checkpoint

The loop itself is ewc_training/population.py's, which trains a run alone or as one cell of a
population; this class is everything one run owns: its position, learner, run directory and checkpoints.

The emulators step on their own threads while the learner updates (`send` actions, update,
`recv` observations), so acting and learning overlap. Losses stay on the device and are read back
only every `log_every` steps, and each step's observations, rewards and episode ends go to the GPU
through pinned buffers (ewc_training/upload.py), so the hot loop has one host synchronisation per
vector step (the actions the emulators need).

A run resumes from any checkpoint (`SequenceTrainer.resume`): the learner, consolidation, probes,
position and random generators come back exactly (ewc_training/schema.py); the emulators restart
new episodes from seeds derived from the step, and the replay comes back only if it was saved
(`run.save_replay`). `request_stop()` (ewc_training/launch.py calls it on SIGINT/SIGTERM) ends the run after
the current update with checkpoints/latest.pt written.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from agents.build import build_learner
from agents.ewc.boundary import consolidate_game
from agents.ewc.fisher import fisher_summary
from agents.ewc.methods import has_penalty
from agents.replay import FrameReplay, replay_bytes
from envs.families import family_of_run
from ewc_training import run_dir as paths
from ewc_training.checkpoint import atomic_write, save_checkpoint
from ewc_training.config import Config
from ewc_training.logger import Logger
from ewc_training.progress import Progress
from ewc_training.schedule import crossed, env_seed, replay_capacity, skip_updates_until_refilled
from ewc_training.schema import (
    Position,
    TrainingState,
    replay_payload,
    replay_saved_at,
    restore_branch,
    restore_rehearsal,
    restore_replay,
    restore_training,
    training_payload,
)


def say(line: str) -> None:
    """A line on stderr, at once: what the run is doing while no progress bar is up yet."""
    print(line, file=sys.stderr, flush=True)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM); the run is saved and can be resumed."""


class SequenceTrainer:
    """Trains one agent on `config.run.games` in order and writes the run directory."""

    def __init__(self, config: Config, run_dir: Path, device: torch.device, logger: Logger):
        self.config = config
        self.run_dir = run_dir
        self.device = device
        self.logger = logger
        generator = torch.Generator(device=device)
        generator.manual_seed(config.run.seed)
        self.family = family_of_run(config.run.games)
        learner = build_learner(config, config.run.games, self.family, device, config.run.seed)
        self.state = TrainingState(Position(), learner, {}, generator)
        self.git_commit = "unknown"
        self.resumed_from: Path | None = None
        self.branched_from: dict[str, object] | None = None  # the source checkpoint, for run.json
        self.stop_reason: str | None = None

    @classmethod
    def resume(cls, config: Config, run_dir: Path, device: torch.device, logger: Logger, checkpoint: Path) -> SequenceTrainer:
        """A trainer at the position of `checkpoint`, with everything it saved restored."""
        trainer = cls(config, run_dir, device, logger)
        restore_training(checkpoint, trainer.games, trainer.state, device)
        trainer.restore_memories(run_dir)
        trainer.resumed_from = checkpoint
        return trainer

    @classmethod
    def branch(cls, config: Config, run_dir: Path, device: torch.device, logger: Logger, checkpoint: Path) -> SequenceTrainer:
        """A new run that starts at the game boundary `checkpoint` of another run (schema.restore_branch
        says which branches are allowed): the earlier games are not trained again."""
        trainer = cls(config, run_dir, device, logger)
        source = restore_branch(checkpoint, config.to_dict(), trainer.state, device)
        trainer.restore_memories(paths.run_dir_of(checkpoint))
        trainer.branched_from = {
            "checkpoint": str(checkpoint.resolve()),
            "games": source["games"][: trainer.position.game_index],
            "total_steps": trainer.position.total_steps,
            "method": source["config"]["consolidation"]["method"],
            "git_commit": source["git_commit"],
            "config": source["config"],
        }
        return trainer

    def restore_memories(self, run_dir: Path) -> None:
        """With replay: the memories of the games finished at the restored position, from `run_dir`."""
        if self.learner.rehearsal is not None:
            finished = self.games[: self.position.game_index]
            restore_rehearsal(paths.rehearsal_memories(run_dir, finished), self.learner.rehearsal)

    @property
    def games(self) -> list[str]:
        return self.config.run.games

    @property
    def learner(self):
        return self.state.learner

    @property
    def position(self) -> Position:
        return self.state.position

    @position.setter
    def position(self, position: Position) -> None:
        self.state.position = position

    def get_state(self) -> dict[str, object]:
        """The checkpoint of this trainer now (ewc_training/schema.py says what it holds)."""
        return training_payload(self.config.to_dict(), self.games, self.state, self.device, self.git_commit)

    def request_stop(self, reason: str) -> None:
        """Stop after the current update (safe to call from a signal handler: it only sets a flag)."""
        self.stop_reason = reason

    def run(self) -> None:
        """Every game left in the sequence: this run as a population of one (ewc_training/population.py)."""
        from ewc_training.population import PopulationTrainer  # the loop imports this module

        population = PopulationTrainer([self])
        population.run()
        if population.diverged:
            raise TrainingDiverged(population.diverged[0][1])

    def resumes_with_replay(self) -> bool:
        """Whether this run, mid-game, will take its game up again with its saved replay (saved at exactly
        this position); False at a game's start, where every replay starts empty."""
        pos = self.position
        return pos.step_in_game > 0 and replay_saved_at(paths.replay_checkpoint(self.run_dir), pos)

    def start_logging(self) -> None:
        """Provenance in run.json, and the logger (after a resume it hides what was logged past the checkpoint)."""
        if self.resumed_from is None:
            info = paths.write_run_files(self.run_dir, self.config, self.device, branched_from=self.branched_from)
            self.logger.start()
            self.logger.config(self.config.flat())
        else:
            info = paths.record_resume(self.run_dir, self.resumed_from, self.position.total_steps)
            self.logger.start(purge_step=self.position.total_steps + 1)
        self.git_commit = str(info["git_commit"])
        if self.branched_from is not None and self.resumed_from is None:  # the branch point: its first game-end checkpoint
            pos = self.position
            self.copy_source_memories()
            self.save(paths.game_end_checkpoint(self.run_dir, pos.game_index, self.games[pos.game_index - 1]))

    def steps_of_earlier_visits(self) -> int:
        """Agent steps the current game was trained before this visit (every visit is steps_per_game long)."""
        index = self.position.game_index
        return self.games[:index].count(self.games[index]) * self.config.run.steps_per_game

    def after_vector_step(self, replay: FrameReplay, game: str, epsilon: float, progress: Progress) -> None:
        """What is due every so many agent steps: logs, latest.pt (the loop then runs the continual
        evaluation, for every cell of a population at once: `evaluation_due`)."""
        config, pos = self.config, self.position
        num_envs = config.env.num_envs
        progress.advance(num_envs)
        if crossed(pos.total_steps, config.run.log_every, num_envs):
            self.check_losses(progress.log(epsilon), game)
            progress.log_retention(self.learner.online, self.state.probes)
        if crossed(pos.total_steps, config.run.checkpoint_every, num_envs) and pos.step_in_game < config.run.steps_per_game:
            self.save_latest(replay)  # at the game's end after_<k>_<game>.pt follows instead

    def game_replay(self, obs: torch.Tensor) -> FrameReplay:
        """This game's replay, starting with the emulators' first observations `obs`.

        Empty at the start of a game, where the learner also starts the game (target synced).
        After a mid-game resume: the saved replay when there is one for exactly this position,
        otherwise an empty one, and learning waits `learning_starts` steps for it to refill rather
        than sampling a near-empty buffer.
        """
        config, pos = self.config, self.position
        capacity = replay_capacity(config.agent, config.run.steps_per_game, config.env.num_envs)
        size = replay_bytes(capacity, self.family.frame_shape) / 1e9
        say(f"{self.games[pos.game_index]}: allocating its replay, {capacity:,} transitions ({size:.2f} GB on {self.device})")
        replay = FrameReplay(
            capacity,
            config.env.num_envs,
            self.device,
            seed=env_seed(config.run.seed, pos.game_index),
            frame_shape=self.family.frame_shape,
            history=self.family.history,
        )
        if pos.step_in_game == 0:
            replay.add_first(obs)
            self.learner.start_game()
        elif restore_replay(paths.replay_checkpoint(self.run_dir), pos, replay):
            replay.add_restart(obs)
        else:
            replay.add_first(obs)
            skip_updates_until_refilled(pos, config.agent)
            paths.record_replay_refilled(self.run_dir, self.games[pos.game_index], pos.step_in_game)
            print(
                f"warning: no replay saved at this position (run.save_replay is off, or it was written for "
                f"another one); {self.games[pos.game_index]} refills it from step {pos.step_in_game:,}, learning "
                f"waits {config.agent.learning_starts:,} steps and the game's Fisher sees only steps after the resume",
                file=sys.stderr,
            )
        return replay

    def check_losses(self, means: dict[str, float] | None, game: str) -> None:
        if means is not None and not all(np.isfinite(list(means.values()))):
            raise TrainingDiverged(
                f"loss became {means['td_loss']} on {game} at step {self.position.step_in_game:,}; "
                f"stopped, the checkpoints in {paths.checkpoint_dir(self.run_dir)} are from before it"
            )

    def evaluation_due(self) -> bool:
        """Whether the vector step just made crossed a multiple of `eval.eval_every`."""
        return crossed(self.position.total_steps, self.config.eval.eval_every, self.config.env.num_envs)

    def log_evaluation(self, scalars: dict[str, float]) -> None:
        """A continual evaluation's scalars (ewc_evaluation/protocol.py: every game of the run, eval/ tags)."""
        for tag, value in scalars.items():
            self.logger.scalar(tag, value, self.position.total_steps)

    def finish_game(self, replay: FrameReplay) -> None:
        """The boundary: consolidate this game from its replay, keep its probe set, save after_<k>_<game>.pt."""
        pos = self.position
        game = self.games[pos.game_index]
        trained_steps = self.steps_of_earlier_visits() + self.config.run.steps_per_game
        end = consolidate_game(self.learner, replay, game, self.config.consolidation, trained_steps)
        if not end.consolidated and has_penalty(self.config.consolidation.method):
            print(
                f"{game}: trained {trained_steps:,} of the {self.config.consolidation.consolidate_after_steps:,} steps "
                "consolidation.consolidate_after_steps asks for; not consolidated yet",
                file=sys.stderr,
            )
        if end.fisher_seconds is not None:
            self.logger.scalar(f"fisher/{game}/seconds", end.fisher_seconds, pos.total_steps)
        if end.fisher is not None:
            for name, value in fisher_summary(end.fisher).items():
                self.logger.scalar(f"fisher/{game}/{name}", value, pos.total_steps)
        if end.probe is not None:
            self.state.probes[game] = end.probe
        self.logger.flush()
        finished = pos.game_index
        if self.learner.rehearsal is not None:
            self.learner.rehearsal.remember(game, replay)
            self.save_memory(finished + 1, game)
        self.position = Position(game_index=finished + 1, total_steps=pos.total_steps)
        self.save(paths.game_end_checkpoint(self.run_dir, finished + 1, game))

    def copy_source_memories(self) -> None:
        """A branch with replay: the source's memory files of the games before the branch point, as they are."""
        if self.learner.rehearsal is None:
            return
        finished = self.games[: self.position.game_index]
        source_dir = paths.run_dir_of(Path(str(self.branched_from["checkpoint"])))
        for source, copy in zip(paths.rehearsal_memories(source_dir, finished), paths.rehearsal_memories(self.run_dir, finished)):
            with source.open("rb") as memory:
                atomic_write(copy, lambda handle, memory=memory: shutil.copyfileobj(memory, handle))

    def save_memory(self, position: int, game: str) -> None:
        """The rehearsal's memory of `game`, the `position`-th of the sequence (before its game-end checkpoint)."""
        save_checkpoint(paths.rehearsal_memory(self.run_dir, position, game), self.learner.rehearsal.get_state(game))

    def stop_if_requested(self, replay: FrameReplay | None = None) -> None:
        """Honour `request_stop`: save latest.pt (with this game's `replay`, if any yet) and stop."""
        if self.stop_reason is None:
            return
        pos = self.position
        self.save_latest(replay)
        raise TrainingInterrupted(
            f"{self.stop_reason}: stopped at {self.games[pos.game_index]} step {pos.step_in_game:,} "
            f"({pos.total_steps:,} steps in all); checkpoint saved in {paths.checkpoint_dir(self.run_dir)}"
        )

    def save(self, path: Path) -> None:
        self.check_finite()
        save_checkpoint(path, self.get_state())

    def save_latest(self, replay: FrameReplay | None) -> None:
        """latest.pt, and the replay beside it when `run.save_replay` (written first: a kill between
        the two leaves a replay of another position, which resuming detects and ignores)."""
        if self.config.run.save_replay and replay is not None:
            save_checkpoint(paths.replay_checkpoint(self.run_dir), replay_payload(self.position, replay))
        self.save(paths.latest_checkpoint(self.run_dir))

    def check_finite(self) -> None:
        """Never write a checkpoint of a diverged network over a good one (losses are checked only
        at log time; this catches a divergence between a log and a checkpoint)."""
        if not all(torch.isfinite(param).all() for param in self.learner.online.parameters()):
            pos = self.position
            where = (
                f"by the end of {self.games[pos.game_index - 1]}"
                if pos.step_in_game == 0
                else (f"on {self.games[pos.game_index]} by step {pos.step_in_game:,}")
            )
            raise TrainingDiverged(
                f"network weights became NaN or infinite {where}; stopped, the checkpoints in "
                f"{paths.checkpoint_dir(self.run_dir)} are from before it"
            )
