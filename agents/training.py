"""The training loop: one agent, one game after another, consolidating at every boundary.

    for each game k in the sequence:
        fresh replay and epsilon schedule; act in N emulators, learn from replay (Double DQN)
        at the end: consolidation.end_game (Fisher from this game's replay), probe set, checkpoint

The emulators step on their own threads while the learner updates (`send` actions, update,
`recv` observations), so acting and learning overlap. Losses stay on the device and are read back
only every `log_every` steps, so the hot loop has one host synchronisation per vector step (the
actions the emulators need).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents import run_dir as paths
from agents.checkpoint import save_checkpoint
from agents.consolidation import make_consolidation
from agents.dqn import DQNLearner, UpdateStats, epsilon_at
from agents.fisher import diagonal_fisher, fisher_summary, replay_batches
from agents.network import QNetwork
from agents.probes import ProbeSet, make_probe_set, retention
from agents.replay import FrameReplay
from config import Config
from envs.atari import NUM_ACTIONS, make_env


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Position:
    """Where the run is in its sequence; saved in every checkpoint."""

    game_index: int = 0
    step_in_game: int = 0
    total_steps: int = 0
    updates_in_game: int = 0


def env_seed(seed: int, game_index: int) -> int:
    """Distinct, reproducible emulator seeds for every game of a run (N envs get seed..seed+N-1)."""
    return seed * 1_000_003 + game_index * 10_007


def build_network(config: Config) -> QNetwork:
    games = config.run.games if config.network.per_game_modulation else []
    return QNetwork(config.network.architecture, NUM_ACTIONS, games)


class EpisodeTracker:
    """Raw game score and length of the episode running in each emulator."""

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.resetting = np.zeros(num_envs, dtype=bool)  # this step returns a reset observation
        self.last_score: float | None = None

    def step(self, rewards: np.ndarray, ended: np.ndarray) -> list[tuple[float, int]]:
        live = ~self.resetting
        self.returns[live] += rewards[live]
        self.lengths[live] += 1
        finished = [(float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(ended)]
        self.returns[ended], self.lengths[ended] = 0.0, 0
        self.resetting = ended.copy()
        if finished:
            self.last_score = finished[-1][0]
        return finished


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

    @property
    def games(self) -> list[str]:
        return self.config.run.games

    def run(self) -> None:
        info = paths.write_run_files(self.run_dir, self.config, self.device)
        self.git_commit = str(info["git_commit"])
        self.writer = SummaryWriter(str(self.run_dir))
        log_config(self.writer, self.config)
        try:
            while self.position.game_index < len(self.games):
                replay = self.train_game()
                self.finish_game(replay)
        finally:
            self.writer.close()

    def train_game(self) -> FrameReplay:
        """Train on the current game until `steps_per_game` agent steps; returns its replay."""
        config, pos = self.config, self.position
        game = self.games[pos.game_index]
        num_envs, steps_per_game = config.env.num_envs, config.run.steps_per_game
        env = make_env(game, num_envs, config.env)
        observations, _ = env.reset(seed=env_seed(config.run.seed, pos.game_index))
        obs = torch.from_numpy(observations).to(self.device)
        capacity = min(config.agent.replay_capacity, steps_per_game + num_envs * 8)
        replay = FrameReplay(capacity, num_envs, self.device, seed=env_seed(config.run.seed, pos.game_index))
        replay.add_first(obs)
        self.learner.start_game()
        episodes = EpisodeTracker(num_envs)
        stats = StatsAccumulator()
        bar = tqdm(total=steps_per_game, initial=pos.step_in_game, unit="step", unit_scale=True,
                   desc=f"[{pos.game_index + 1}/{len(self.games)}] {game}", mininterval=2.0, dynamic_ncols=True)
        clock = (time.perf_counter(), pos.total_steps)
        try:
            while pos.step_in_game < steps_per_game:
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
                if self._crossed(config.run.checkpoint_every):
                    self.save(paths.latest_checkpoint(self.run_dir))
                if self._crossed(config.eval.eval_every):
                    self.evaluate_all_games()
        finally:
            bar.close()
            env.close()
        return replay

    def _crossed(self, every: int) -> bool:
        """Whether the last vector step crossed a multiple of `every` agent steps."""
        if every <= 0:
            return False
        total = self.position.total_steps
        return total // every > (total - self.config.env.num_envs) // every

    def learn(self, replay: FrameReplay, game: str, stats: StatsAccumulator) -> None:
        """The updates owed so far: one per `steps_per_update` agent steps after `learning_starts`."""
        agent, pos = self.config.agent, self.position
        owed = max(0, (pos.step_in_game - agent.learning_starts) // agent.steps_per_update) - pos.updates_in_game
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
                raise TrainingDiverged(f"loss became {means['td_loss']} on {game} at step {self.position.step_in_game}")
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
        from agents.evaluation import continual_evaluation  # here, not on top: it imports this module

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
        save_checkpoint(path, self.get_state())

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
            "git_commit": self.git_commit,
        }


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
