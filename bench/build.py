"""What the benchmark times, built as training builds it: learners from the training builder with the
EWC penalty active (as from the second game of a sequence on), replays filled with random frames, and
the clock's one rule on CUDA (wait for queued work before reading it).
"""

from __future__ import annotations

import dataclasses

import torch

from agents.build import build_learner
from agents.dqn import DQNLearner
from agents.replay import FrameReplay
from envs.families import ATARI, Family, family_of_run
from ewc_training.config import Config


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def activate_penalty(learner: DQNLearner) -> None:
    """Give the learner's EWC a finished earlier game, as from the second game of a sequence on."""
    learner.consolidation.end_game(
        "earlier-game",
        learner.online,
        lambda: {name: torch.rand_like(p) for name, p in learner.online.shared_parameters().items()},
    )


def make_learner(
    config: Config,
    device: torch.device,
    update_mode: str,
    penalty: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> DQNLearner:
    """The training builder's learner in `update_mode`, with the EWC penalty on (or fine-tuning).

    `memory_format` (torch.channels_last: NHWC convolution weights) is set in place, so the optimizer
    keeps the same parameters, and before the penalty's anchors and Fisher are copied from the weights
    and before Adam's moments exist, so that all of them follow the weights' layout as in training.
    """
    sections = dataclasses.replace(
        config,
        agent=dataclasses.replace(config.agent, update_mode=update_mode),
        consolidation=dataclasses.replace(config.consolidation, method="ewc" if penalty else "finetune"),
    )
    learner = build_learner(sections, config.run.games, family_of_run(config.run.games), device, config.run.seed)
    learner.online.to(memory_format=memory_format)
    learner.target.to(memory_format=memory_format)
    if penalty:
        activate_penalty(learner)
    return learner


def random_replay(transitions: int, num_envs: int, device: torch.device, family: Family = ATARI) -> FrameReplay:
    """A frame-once replay of `family`'s frames, filled with random ones and a few episode ends
    (speed does not depend on what the frames show)."""
    replay = FrameReplay(transitions, num_envs, device, frame_shape=family.frame_shape, history=family.history)

    def frames() -> torch.Tensor:
        return torch.randint(0, 256, (num_envs, *family.observation_shape), dtype=torch.uint8, device=device)

    replay.add_first(frames())
    no = torch.zeros(num_envs, dtype=torch.bool, device=device)
    for _ in range(replay.slots - 1):
        actions = torch.randint(family.num_actions, (num_envs,), device=device)
        replay.add(actions, torch.zeros(num_envs, device=device), torch.rand(num_envs, device=device) < 0.01, no, frames())
    return replay
