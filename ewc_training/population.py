"""The training loop, for one run or for a population of runs trained in one process in lockstep.

    for each game k of the sequence:
        every cell: fresh replay, emulators, epsilon schedule (a GameLoop)
        each vector step: all cells act at once -> emulators step -> all cells update at once -> observe
        at the end: every cell's boundary (its own Fisher from its own replay), its checkpoint

A cell is an ordinary run (ewc_training/trainer.py's SequenceTrainer): its own seed, method, lambda, run
directory, TensorBoard events and checkpoints, which evaluate.py and the sweep report read as any other.
The population only batches the arithmetic (agents/population.py): cells at the same position of the
same games, with the same schedule, step together. A single run is a population of one, through this
same loop.

A cell whose loss diverges is stopped and reported while the others go on (`diverged`); Ctrl-C stops
every cell after the current update with each one's latest.pt written.
"""

from __future__ import annotations

import sys
from dataclasses import astuple

import numpy as np
import torch

from agents.dqn import epsilon_at
from agents.ewc.methods import rehearses
from agents.population import PopulationLearner
from agents.replay import FrameReplay
from envs.episodes import EpisodeTracker
from envs.families import make_env
from ewc_evaluation.protocol import continual_evaluation_together
from ewc_training import run_dir as paths
from ewc_training.progress import Progress
from ewc_training.schedule import env_seed, updates_owed
from ewc_training.trainer import SequenceTrainer, TrainingDiverged, TrainingInterrupted, say
from ewc_training.upload import Upload


class GameLoop:
    """One cell's play of its current game: its emulators, replay, episode scores, uploads and progress."""

    def __init__(self, cell: SequenceTrainer, cells: int = 1, shows_bar: bool = True):
        config, pos = cell.config, cell.position
        self.cell = cell
        self.game = cell.games[pos.game_index]
        say(f"{self.game}: starting {config.env.num_envs} emulators" + (f" (seed {config.run.seed})" if cells > 1 else ""))
        self.env = make_env(self.game, config.env.num_envs, config.env)
        try:
            observations, _ = self.env.reset(seed=env_seed(config.run.seed, pos.game_index, pos.step_in_game))
            self.obs = torch.from_numpy(observations).to(cell.device)
            self.replay = cell.game_replay(self.obs)
        except BaseException:
            self.env.close()
            raise
        self.episodes = EpisodeTracker(config.env.num_envs)
        self.upload = Upload(cell.device)  # queued behind the updates: the actions are the one wait per vector step
        self.progress = Progress(cell.logger, self.game, pos, len(cell.games), config.run.steps_per_game, cells, shows_bar)
        self.epsilon_steps = cell.steps_of_earlier_visits() if config.agent.epsilon_clock == "game" else 0

    @property
    def done(self) -> bool:
        return self.cell.position.step_in_game >= self.cell.config.run.steps_per_game

    def epsilon(self) -> float:
        config = self.cell.config
        return epsilon_at(self.epsilon_steps + self.cell.position.step_in_game, config.agent, config.run.steps_per_game)

    def send(self, actions: torch.Tensor) -> None:
        self.env.send(actions.cpu().numpy())

    def receive(self, actions: torch.Tensor, epsilon: float) -> None:
        """The emulators' step: into the replay, the episode scores, the position; then what is due."""
        cell, pos, upload = self.cell, self.cell.position, self.upload
        observations, rewards, terminated, truncated, _ = self.env.recv()
        self.obs = upload("observations", observations)
        self.replay.add(
            actions,
            upload("rewards", np.clip(rewards, -1, 1).astype(np.float32)),
            upload("terminated", terminated),
            upload("truncated", truncated),
            self.obs,
        )
        self.progress.episodes_ended(self.episodes.step(rewards, terminated | truncated))
        num_envs = cell.config.env.num_envs
        pos.step_in_game += num_envs
        pos.total_steps += num_envs
        cell.after_vector_step(self.replay, self.game, epsilon, self.progress)

    def close(self) -> None:
        self.progress.close()
        self.env.close()


class PopulationTrainer:
    """Trains `cells` (SequenceTrainers at one position of the same games) in lockstep; see the module docstring."""

    def __init__(self, cells: list[SequenceTrainer]):
        self.cells = list(cells)
        self.learner = PopulationLearner([cell.learner for cell in self.cells])
        self.diverged: list[tuple[SequenceTrainer, str]] = []
        self.stop_reason: str | None = None

    @property
    def games(self) -> list[str]:
        return self.cells[0].games

    def request_stop(self, reason: str) -> None:
        """Stop every cell after the current update (safe in a signal handler: it only sets flags)."""
        self.stop_reason = reason
        for cell in self.cells:
            cell.request_stop(reason)

    def run(self) -> None:
        """Every game left in the sequence, for every cell that has not diverged."""
        for cell in self.cells:
            cell.start_logging()
            if len(self.cells) > 1:
                paths.record_population(cell.run_dir, [other.run_dir for other in self.cells], cell.position.total_steps)
        loggers = [cell.logger for cell in self.cells]
        try:
            while self.cells and self.cells[0].position.game_index < len(self.games):
                self.stop_if_requested()
                replays = self.train_game()
                self.each_cell(list(zip(self.cells, replays)), lambda cell, replay: cell.finish_game(replay))
        finally:
            for logger in loggers:
                logger.close()

    def train_game(self) -> list[FrameReplay]:
        """Every cell on the current game until `steps_per_game` agent steps; returns their replays."""
        loops: list[GameLoop] = []
        try:
            for index, cell in enumerate(self.cells):
                loops.append(GameLoop(cell, len(self.cells), shows_bar=index == 0))
            check_in_step(loops)
            game = loops[0].game
            while loops and not loops[0].done:  # no loop left: every cell diverged
                self.stop_if_requested(loops)
                epsilon = loops[0].epsilon()
                actions = self.learner.act(
                    [loop.obs for loop in loops], game, epsilon, [cell.state.generator for cell in self.cells]
                )
                for loop, cell_actions in zip(loops, actions):
                    loop.send(cell_actions)
                self.learn(loops, game)  # while the emulators step
                loops = self.receive(loops, actions, epsilon)
            return [loop.replay for loop in loops]
        finally:
            for loop in loops:
                loop.close()

    def learn(self, loops: list[GameLoop], game: str) -> None:
        """The updates owed so far (ewc_training/schedule.py), once the replays hold a batch; every cell
        owes the same, being at the same position."""
        config, pos = self.cells[0].config, self.cells[0].position
        if len(loops[0].replay) < config.agent.batch_size:
            return
        owed = updates_owed(pos, config.agent, config.env.num_envs)
        if owed > 0:
            for loop in loops:
                loop.progress.learning_starts(len(loop.replay))
        for _ in range(owed):
            stats = self.learner.update([loop.replay for loop in loops], game)  # drawn on the device; in the graph when captured
            for loop, cell_stats in zip(loops, stats):
                loop.progress.add_update(cell_stats)
                loop.cell.position.updates_in_game += 1

    def receive(self, loops: list[GameLoop], actions: list[torch.Tensor], epsilon: float) -> list[GameLoop]:
        """Every cell's emulator step; returns the loops of the cells still going."""
        going = self.each_cell(list(zip(loops, actions)), lambda loop, cell_actions: loop.receive(cell_actions, epsilon))
        self.evaluate_due_cells()
        return [loop for loop, _ in going]

    def evaluate_due_cells(self) -> None:
        """Continual evaluation of every cell that is due, those with the same protocol playing together
        (each with its own emulators, seed and generator, as alone; greedy actions from one forward pass)."""
        protocols: dict[str, list[int]] = {}
        for index, cell in enumerate(self.cells):
            if cell.evaluation_due():
                protocols.setdefault(repr(cell.config.eval), []).append(index)
        for members in protocols.values():
            cells = [self.cells[index] for index in members]
            first = cells[0]
            results = continual_evaluation_together(
                lambda frames, game, members=members: self.learner.greedy(frames, game, members),
                [cell.config.run.seed for cell in cells],
                first.learner.online.num_actions,
                first.device,
                first.games,
                first.config.eval,
                first.config.env,
            )
            for cell, scalars in zip(cells, results):
                cell.log_evaluation(scalars)

    def each_cell(self, work: list[tuple], step) -> list[tuple]:
        """`step(*item)` for each cell's item (its first element a GameLoop or the cell itself); a cell that
        diverges there leaves the population (alone, the run ends with the error). Returns the items of
        the cells still going."""
        going = []
        for item in work:
            try:
                step(*item)
                going.append(item)
            except TrainingDiverged as error:
                self.leave(item[0], error)
        if len(going) < len(work) and self.cells:
            self.learner = PopulationLearner([cell.learner for cell in self.cells])
        return going

    def leave(self, loop_or_cell: GameLoop | SequenceTrainer, error: TrainingDiverged) -> None:
        """A diverged cell stops here (its checkpoints are from before the divergence); the others go on."""
        if isinstance(loop_or_cell, GameLoop):
            loop_or_cell.close()
        cell = loop_or_cell.cell if isinstance(loop_or_cell, GameLoop) else loop_or_cell
        self.cells.remove(cell)
        self.diverged.append((cell, str(error)))
        if self.cells:
            print(f"error: {cell.run_dir}: {error}; the other {len(self.cells)} cell(s) go on", file=sys.stderr)

    def stop_if_requested(self, loops: list[GameLoop] | None = None) -> None:
        """Honour a stop request: every cell saves latest.pt (with its replay), then one TrainingInterrupted."""
        if self.cells[0].stop_reason is None:
            return
        stopped = []
        replays = [loop.replay for loop in loops] if loops else [None] * len(self.cells)
        for cell, replay in zip(self.cells, replays):
            try:
                cell.stop_if_requested(replay)
            except TrainingInterrupted as interrupted:
                stopped.append(str(interrupted))
        raise TrainingInterrupted("\n".join(stopped))


def check_in_step(loops: list[GameLoop]) -> None:
    """Every cell must owe the same updates from here: the same position, and each replay restored (or
    each refilled) alike. `population_groups` sees to it; a saved replay that fails its check on
    loading would break it, and is refused in one line rather than trained out of step."""
    states = {(len(loop.replay), astuple(loop.cell.position)) for loop in loops}
    if len(states) > 1:
        names = ", ".join(str(loop.cell.run_dir) for loop in loops)
        raise ValueError(
            f"the runs {names} cannot step together from here (their replays came back differently); resume them one by one"
        )


def population_groups(cells: list[SequenceTrainer]) -> list[list[SequenceTrainer]]:
    """The cells that can step together, in groups (in the order given): the same games, position (and,
    mid-game, each with its saved replay or each without), device, schedule and agent, network and
    emulator settings; a method with replay trains alone."""
    groups: dict[tuple, list[SequenceTrainer]] = {}
    for cell in cells:
        config = cell.config
        if rehearses(config.consolidation.method):
            key: tuple = ("alone", id(cell))
        else:
            shape = (config.agent, config.network, config.env, config.run.steps_per_game)
            key = (tuple(cell.games), astuple(cell.position), cell.resumes_with_replay(), str(cell.device), repr(shape))
        groups.setdefault(key, []).append(cell)
    return list(groups.values())
