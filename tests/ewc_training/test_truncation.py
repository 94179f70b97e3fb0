"""Time limits in a real run: a truncated episode is bootstrapped, a terminated one is not.

A MinAtar game with `env.max_episode_frames` at its floor (100 agent steps) ends some episodes by
the time limit and others by game over. The run is observed, never changed: the emulators' own
(terminated, truncated) flags are recorded as the loop receives them, and every batch the learner
samples is recorded where the replay builds it. The learner's target is
y = r + gamma * discount * Q_target(s', a*) (agents/dqn.py), so the discount it is handed must be
1 (bootstrap with gamma) after a truncation and 0 after a termination.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.replay import FrameReplay, Transitions
from ewc_training import population as loop_module
from ewc_training import trainer as trainer_module
from ewc_training.config import build_config
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer

GAME = "minatar:seaquest"  # at 100 steps a run ends about twice as many episodes by game over as by the limit
STEPS = 2000
NUM_ENVS = 4


class RecordedEnv:
    """The real vector env, with every step's (terminated, truncated) kept, in the order received."""

    def __init__(self, env):
        self.env = env
        self.ends: list[tuple[np.ndarray, np.ndarray]] = []

    def recv(self):
        observations, rewards, terminated, truncated, info = self.env.recv()
        self.ends.append((terminated.copy(), truncated.copy()))
        return observations, rewards, terminated, truncated, info

    def __getattr__(self, name):
        return getattr(self.env, name)


class RecordedReplay(FrameReplay):
    """The real replay, with every batch it builds for the learner kept beside its (env, t) indices."""

    batches: list[tuple[torch.Tensor, torch.Tensor, Transitions]] = []

    def gather(self, env: torch.Tensor, t: torch.Tensor) -> Transitions:
        batch = super().gather(env, t)
        RecordedReplay.batches.append((env.clone(), t.clone(), batch))
        return batch


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(episode ends per vector step, the learner's sampled batches, the game's replay) of one short real run."""
    config = build_config(
        "configs/smoke.yaml",
        [
            f"run.games=[{GAME}]",
            "network.architecture=minatar",
            f"run.steps_per_game={STEPS}",
            f"env.num_envs={NUM_ENVS}",
            "env.max_episode_frames=100",
            "agent.learning_starts=400",
            "agent.batch_size=16",
            "consolidation.method=finetune",
            "consolidation.probe_states=0",
            "run.checkpoint_every=0",
            "run.log_every=100000",
            "run.device=cpu",
        ],
    )
    envs: list[RecordedEnv] = []
    make_env = loop_module.make_env

    def recorded_make_env(*args, **kwargs):
        envs.append(RecordedEnv(make_env(*args, **kwargs)))
        return envs[-1]

    replays: list[FrameReplay] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop_module, "make_env", recorded_make_env)
        patch.setattr(trainer_module, "FrameReplay", RecordedReplay)
        RecordedReplay.batches = []
        trainer = SequenceTrainer(config, tmp_path_factory.mktemp("truncation") / "run", torch.device("cpu"), MemoryLogger())
        finish_game = trainer.finish_game
        trainer.finish_game = lambda replay: (replays.append(replay), finish_game(replay))
        trainer.run()
    (env,) = envs
    return env.ends, RecordedReplay.batches, replays[0], config.agent.gamma


def ended_transitions(ends, kind: int) -> set[tuple[int, int]]:
    """(env, t) of the transitions whose next observation ended the episode: kind 0 terminated, 1 truncated.

    The replay's stream index t of the k-th vector step of a game is k (slot 0 holds the reset observation).
    """
    return {(int(env), t) for t, flags in enumerate(ends) for env in np.flatnonzero(flags[kind])}


def test_the_run_ends_episodes_both_ways(recorded):
    ends, batches, _, _ = recorded
    assert len(ends) == STEPS // NUM_ENVS
    assert len(ended_transitions(ends, 0)) >= 10
    assert len(ended_transitions(ends, 1)) >= 5
    assert len(batches) == (STEPS - 400) // 4  # one batch per update: the learner learned


def test_the_learners_batches_bootstrap_after_a_truncation_and_not_after_a_termination(recorded):
    """discount_t of every sampled transition: 0 after a termination, 1 (gamma * 1) otherwise, truncations included."""
    ends, batches, _, gamma = recorded
    terminated, truncated = ended_transitions(ends, 0), ended_transitions(ends, 1)
    seen = {"terminated": 0, "truncated": 0}
    for envs, steps, batch in batches:
        for env, t, discount in zip(envs.tolist(), steps.tolist(), batch.discount_t.tolist()):
            if (env, t) in terminated:
                seen["terminated"] += 1
                assert gamma * discount == 0, (env, t)
            else:
                assert gamma * discount == pytest.approx(gamma), (env, t)
                seen["truncated"] += (env, t) in truncated
    assert seen["terminated"] > 0 and seen["truncated"] > 0, seen  # both kinds were sampled


def test_the_replay_keeps_every_truncation_bootstrapped(recorded):
    """Every episode end of the run, read back as the learner would sample it."""
    ends, _, replay, _ = recorded
    for kind, expected in ((0, 0.0), (1, 1.0)):
        pairs = sorted(ended_transitions(ends, kind))
        env, t = torch.tensor([e for e, _ in pairs]), torch.tensor([s for _, s in pairs])
        assert replay.has_transition[env, t % replay.slots].all()  # both kinds are sampled like any transition
        assert FrameReplay.gather(replay, env, t).discount_t.tolist() == [expected] * len(pairs)
