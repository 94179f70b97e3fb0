"""The training loop: one agent, one game after another, consolidating at every boundary.

    for each game k in the sequence:
        fresh replay and epsilon schedule; act in N emulators, learn from replay (Double DQN)
        at the end: consolidation.end_game (Fisher from this game's replay), probe set, checkpoint

The emulators step on their own threads while the learner updates (`send` actions, update,
`recv` observations), so acting and learning overlap. Losses stay on the device and are read back
only every `log_every` steps, so the hot loop has one host synchronisation per vector step (the
actions the emulators need).

A run resumes from any checkpoint (`SequenceTrainer.resume`): the learner, consolidation, probes,
position and random generators come back exactly; the emulators restart new episodes from seeds
derived from the step, and the replay comes back only if it was saved (`run.save_replay`).
`request_stop()` (train.py calls it on SIGINT/SIGTERM) ends the run after the current update
with checkpoints/latest.pt written.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents import run_dir as paths
from agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from agents.consolidation import make_consolidation
from agents.dqn import DQNLearner, UpdateStats, epsilon_at
from agents.episodes import EpisodeTracker
from agents.evaluation import continual_evaluation
from agents.fisher import diagonal_fisher, fisher_summary, replay_batches
from agents.network import QNetwork
from agents.probes import ProbeSet, make_probe_set, retention
from agents.replay import FrameReplay
from config import Config
from envs.atari import NUM_ACTIONS, make_env


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM); the run is saved and can be resumed."""


@dataclass
class Position:
    """Where the run is in its sequence; saved in every checkpoint."""

    game_index: int = 0
    step_in_game: int = 0
    total_steps: int = 0
    updates_in_game: int = 0
    updates_skipped: int = 0
    """Updates this game's schedule will not make: after a resume without a saved replay, learning
    waits `learning_starts` steps for the refilled buffer instead of catching up all at once."""


SEED_LIMIT = 2**31 - 2**16
"""ale-py takes int32 seeds and gives emulator i of N the seed `seed + i`: stay below 2^31 with room."""


def env_seed(seed: int, game_index: int, step_in_game: int = 0) -> int:
    """Distinct, reproducible emulator seeds for every game of a run (N envs get seed..seed+N-1).

    Emulator states are not saved, so a game resumed at a later step restarts its episodes from a
    seed of that step: resuming the same checkpoint twice plays the same episodes.
    """
    return (seed * 1_000_003 + game_index * 10_007 + step_in_game) % SEED_LIMIT


def replay_capacity(config: Config) -> int:
    """Transitions one game's replay holds: the configured capacity, or the whole game if shorter."""
    return min(config.agent.replay_capacity, config.run.steps_per_game + config.env.num_envs * 8)


def build_network(config: Config) -> QNetwork:
    games = config.run.games if config.network.per_game_modulation else []
    return QNetwork(config.network.architecture, NUM_ACTIONS, games)


class StatsAccumulator:
    """Sums update statistics on the device; `read()` is the only host synchronisation."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, stats: UpdateStats) -> None:
        for name, value in asdict(stats).items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.count += 1

    def read(self) -> dict[str, float]:
        means = {name: float(total) / self.count for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


class SequenceTrainer:
    """Trains one agent on `config.run.games` in order and writes the run directory."""

    def __init__(self, config: Config, run_dir: Path, device: torch.device):
        self.config = config
        self.run_dir = run_dir
        self.device = device
        torch.manual_seed(config.run.seed)
        network = build_network(config).to(device)
        cons = config.consolidation
        consolidation = make_consolidation(cons.method, cons.ewc_lambda, cons.online_gamma)
        self.learner = DQNLearner(network, config.agent, consolidation)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(config.run.seed)
        self.probes: dict[str, ProbeSet] = {}
        self.position = Position()
        self.writer: SummaryWriter | None = None
        self.git_commit = "unknown"
        self.resumed_from: Path | None = None
        self.stop_reason: str | None = None

    @classmethod
    def resume(cls, config: Config, run_dir: Path, device: torch.device, checkpoint: Path) -> SequenceTrainer:
        """A trainer at the position of `checkpoint`, with everything it saved restored."""
        state = load_checkpoint(checkpoint, map_location=device)
        trainer = cls(config, run_dir, device)
        try:
            trainer.set_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{checkpoint}: does not fit this run ({reason})") from None
        trainer.resumed_from = checkpoint
        return trainer

    def set_state(self, state: dict[str, object]) -> None:
        """Restore what `get_state` saved; refuses a checkpoint of another run's games or network."""
        if list(state["games"]) != self.games:
            raise ValueError(f"it was trained on games {state['games']}, config.yaml lists {self.games}")
        if state["device_type"] != self.device.type:
            raise ValueError(f"it was written on {state['device_type']}; resume it there (generator states do not move)")
        check_same_shapes(state["learner"]["online"], self.learner.online.state_dict())
        self.position = Position(**state["position"])
        self.learner.set_state(state["learner"])
        self.learner.consolidation.set_state(state["consolidation"])
        self.probes = {game: ProbeSet(**probe) for game, probe in state["probes"].items()}
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())

    def request_stop(self, reason: str) -> None:
        """Stop after the current update (safe to call from a signal handler: it only sets a flag)."""
        self.stop_reason = reason

    @property
    def games(self) -> list[str]:
        return self.config.run.games

    def run(self) -> None:
        if self.resumed_from is None:
            info = paths.write_run_files(self.run_dir, self.config, self.device)
        else:
            info = paths.record_resume(self.run_dir, self.resumed_from, self.position.total_steps)
        self.git_commit = str(info["git_commit"])
        # After a resume, TensorBoard hides what the crashed process logged past the checkpoint.
        purge_step = None if self.resumed_from is None else self.position.total_steps + 1
        self.writer = SummaryWriter(str(self.run_dir), purge_step=purge_step)
        if self.resumed_from is None:
            log_config(self.writer, self.config)
        try:
            while self.position.game_index < len(self.games):
                self.stop_if_requested()
                self.finish_game(self.train_game())  # one game's replay alive at a time
        finally:
            self.writer.close()

    def train_game(self) -> FrameReplay:
        """Train on the current game until `steps_per_game` agent steps; returns its replay."""
        config, pos = self.config, self.position
        game = self.games[pos.game_index]
        num_envs, steps_per_game = config.env.num_envs, config.run.steps_per_game
        env = make_env(game, num_envs, config.env)
        observations, _ = env.reset(seed=env_seed(config.run.seed, pos.game_index, pos.step_in_game))
        obs = torch.from_numpy(observations).to(self.device)
        replay = self.game_replay(obs)
        episodes = EpisodeTracker(num_envs)
        stats = StatsAccumulator()
        bar = tqdm(total=steps_per_game, initial=pos.step_in_game, unit="step", unit_scale=True,
                   desc=f"[{pos.game_index + 1}/{len(self.games)}] {game}", mininterval=2.0, dynamic_ncols=True)
        clock = (time.perf_counter(), pos.total_steps)
        try:
            while pos.step_in_game < steps_per_game:
                self.stop_if_requested(replay)
                epsilon = epsilon_at(pos.step_in_game, config.agent, steps_per_game)
                actions = self.learner.act(obs, game, epsilon, self.generator)
                env.send(actions.cpu().numpy())
                self.learn(replay, game, stats)  # while the emulators step
                observations, rewards, terminated, truncated, _ = env.recv()
                obs = torch.from_numpy(observations).to(self.device)
                replay.add(actions, torch.from_numpy(np.clip(rewards, -1, 1)), torch.from_numpy(terminated),
                           torch.from_numpy(truncated), obs)
                for score, length in episodes.step(rewards, terminated | truncated):
                    self.writer.add_scalar(f"charts/{game}/episodic_return", score, pos.total_steps)
                    self.writer.add_scalar(f"charts/{game}/episodic_length", length, pos.total_steps)
                pos.step_in_game += num_envs
                pos.total_steps += num_envs
                bar.update(num_envs)
                if self._crossed(config.run.log_every):
                    clock = self.log_progress(game, epsilon, stats, clock, bar, episodes)
                if self._crossed(config.run.checkpoint_every) and pos.step_in_game < steps_per_game:
                    self.save_latest(replay)  # at the game's end after_<k>_<game>.pt follows instead
                if self._crossed(config.eval.eval_every):
                    self.evaluate_all_games()
        finally:
            bar.close()
            env.close()
        return replay

    def game_replay(self, obs: torch.Tensor) -> FrameReplay:
        """This game's replay, starting with the emulators' first observations `obs`.

        Empty at the start of a game. After a mid-game resume: the saved replay when there is one
        for exactly this position, otherwise an empty one, and learning waits `learning_starts`
        steps for it to refill rather than sampling a near-empty buffer.
        """
        pos, agent = self.position, self.config.agent
        replay = FrameReplay(replay_capacity(self.config), self.config.env.num_envs, self.device,
                             seed=env_seed(self.config.run.seed, pos.game_index))
        if pos.step_in_game == 0:
            replay.add_first(obs)
            self.learner.start_game()
        elif self.restore_replay(replay):
            replay.add_restart(obs)
        else:
            replay.add_first(obs)
            pos.updates_skipped = pos.step_in_game // agent.steps_per_update - pos.updates_in_game
            print(f"warning: no replay saved at this position (run.save_replay is off, or it was written for "
                  f"another one); {self.games[pos.game_index]} refills it from step {pos.step_in_game:,}, learning "
                  f"waits {agent.learning_starts:,} steps and the game's Fisher sees only steps after the resume",
                  file=sys.stderr)
        return replay

    def restore_replay(self, replay: FrameReplay) -> bool:
        """Load checkpoints/latest_replay.pt into `replay` if it was saved at the current position."""
        path = paths.replay_checkpoint(self.run_dir)
        if not path.is_file():
            return False
        try:
            saved = load_checkpoint(path, mmap=True)  # copied straight into the replay, never held twice
            if saved["position"] != asdict(self.position):
                return False
            replay.set_state(saved["replay"])
        except (CheckpointError, KeyError, RuntimeError) as error:
            print(f"warning: cannot use the saved replay ({str(error).splitlines()[0]})", file=sys.stderr)
            return False
        return True

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

    def _crossed(self, every: int) -> bool:
        """Whether the last vector step crossed a multiple of `every` agent steps."""
        if every <= 0:
            return False
        total = self.position.total_steps
        return total // every > (total - self.config.env.num_envs) // every

    def learn(self, replay: FrameReplay, game: str, stats: StatsAccumulator) -> None:
        """The updates owed so far: one per `steps_per_update` agent steps after `learning_starts`."""
        agent, pos = self.config.agent, self.position
        in_flight = pos.step_in_game + self.config.env.num_envs  # the vector step the emulators are taking now
        due = max(0, (in_flight - agent.learning_starts) // agent.steps_per_update) - pos.updates_skipped
        owed = due - pos.updates_in_game
        if len(replay) < agent.batch_size:
            return
        for _ in range(owed):
            stats.add(self.learner.update(replay.sample(agent.batch_size), game))
            pos.updates_in_game += 1

    def log_progress(self, game, epsilon, stats, clock, bar, episodes) -> tuple[float, int]:
        """Scalars every `log_every` steps: losses, epsilon, steps/s, retention of earlier games."""
        step = self.position.total_steps
        now = time.perf_counter()
        steps_per_second = (step - clock[1]) / max(now - clock[0], 1e-9)
        self.writer.add_scalar("charts/SPS", steps_per_second, step)
        self.writer.add_scalar(f"charts/{game}/epsilon", epsilon, step)
        if stats.count:
            means = stats.read()
            if not all(math.isfinite(v) for v in means.values()):
                raise TrainingDiverged(f"loss became {means['td_loss']} on {game} at step {self.position.step_in_game:,}; "
                                       f"stopped, the checkpoints in {paths.checkpoint_dir(self.run_dir)} are from before it")
            self.writer.add_scalar(f"losses/{game}/td_loss", means["td_loss"], step)
            self.writer.add_scalar(f"losses/{game}/q_values", means["q_mean"], step)
            self.writer.add_scalar(f"losses/{game}/consolidation", means["consolidation"], step)
            ratio = means["consolidation"] / means["td_loss"] if means["td_loss"] > 0 else 0.0
            self.writer.add_scalar(f"losses/{game}/consolidation_to_td_ratio", ratio, step)
        for probed_game, probe in self.probes.items():
            if probed_game != game:
                for name, value in retention(self.learner.online, probe, probed_game).items():
                    self.writer.add_scalar(f"retention/{probed_game}/{name}", value, step)
        bar.set_postfix(sps=f"{steps_per_second:,.0f}", last_return=episodes.last_score, refresh=False)
        return now, step

    def evaluate_all_games(self) -> None:
        """Continual evaluation: score the current network on every game of the run (eval/ tags)."""
        for tag, value in continual_evaluation(self.learner.online, self.config).items():
            self.writer.add_scalar(tag, value, self.position.total_steps)

    def finish_game(self, replay: FrameReplay) -> None:
        """Consolidate (Fisher from this game's replay), keep a probe set, save after_<k>_<game>.pt."""
        config, pos = self.config, self.position
        game = self.games[pos.game_index]
        cons = config.consolidation

        def compute_fisher():
            started = time.perf_counter()
            fisher = diagonal_fisher(
                self.learner.online, replay_batches(replay, cons.fisher_samples, cons.fisher_batch_size), game,
                cons.fisher, temperature=cons.policy_temperature, target_network=self.learner.target,
                gamma=config.agent.gamma,
            )
            self.writer.add_scalar(f"fisher/{game}/seconds", time.perf_counter() - started, pos.total_steps)
            return fisher

        fisher = self.learner.consolidation.end_game(game, self.learner.online, compute_fisher)
        if fisher is not None:
            for name, value in fisher_summary(fisher).items():
                self.writer.add_scalar(f"fisher/{game}/{name}", value, pos.total_steps)
        if cons.probe_states > 0:
            self.probes[game] = make_probe_set(self.learner.online, replay, game, cons.probe_states)
        self.writer.flush()
        finished = pos.game_index
        self.position = Position(game_index=finished + 1, total_steps=pos.total_steps)
        self.save(paths.game_end_checkpoint(self.run_dir, finished + 1, game))

    def save(self, path: Path) -> None:
        self.check_finite()
        save_checkpoint(path, self.get_state())

    def save_latest(self, replay: FrameReplay | None) -> None:
        """latest.pt, and the replay beside it when `run.save_replay` (written first: a kill between
        the two leaves a replay of another position, which resuming detects and ignores)."""
        if self.config.run.save_replay and replay is not None:
            save_checkpoint(paths.replay_checkpoint(self.run_dir),
                            {"position": asdict(self.position), "replay": replay.get_state()})
        self.save(paths.latest_checkpoint(self.run_dir))

    def check_finite(self) -> None:
        """Never write a checkpoint of a diverged network over a good one (losses are checked only
        at log time; this catches a divergence between a log and a checkpoint)."""
        if not all(torch.isfinite(param).all() for param in self.learner.online.parameters()):
            pos = self.position
            raise TrainingDiverged(
                f"network weights became NaN or infinite on {self.games[pos.game_index]} by step "
                f"{pos.step_in_game:,}; stopped, the checkpoints in {paths.checkpoint_dir(self.run_dir)} are from before it"
            )

    def get_state(self) -> dict[str, object]:
        """Everything needed to evaluate this agent alone and to resume the run."""
        return {
            "config": self.config.to_dict(),
            "games": list(self.games),
            "position": asdict(self.position),
            "learner": self.learner.get_state(),
            "consolidation": self.learner.consolidation.get_state(),
            "probes": {game: probe.get_state() for game, probe in self.probes.items()},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "device_type": self.device.type,
            "git_commit": self.git_commit,
        }


def check_same_shapes(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """One readable line for a checkpoint of another network (torch's own error spans many)."""
    if saved.keys() != expected.keys():
        different = sorted(saved.keys() ^ expected.keys())
        raise ValueError(f"its network has other layers ({different[0]} is in only one of it and config.yaml)")
    for name, tensor in saved.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"its network has another shape ({name}: {tuple(tensor.shape)} in the checkpoint, "
                             f"{tuple(expected[name].shape)} from config.yaml)")


def log_config(writer: SummaryWriter, config: Config) -> None:
    """The resolved config as a text table and as TensorBoard hparams (to compare runs)."""
    from torch.utils.tensorboard.summary import hparams

    flat = {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}
    rows = "\n".join(f"|{key}|{value}|" for key, value in flat.items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")
    hparam_values = {key: (value if isinstance(value, (int, float, str, bool)) else str(value)) for key, value in flat.items()}
    experiment, session_start, session_end = hparams(hparam_values, {"eval/mean_hns": float("nan")})
    for summary in (experiment, session_start, session_end):
        writer.file_writer.add_summary(summary)
