"""The peer the training loop is compared with: CleanRL's `dqn_atari.py` loop structure, run on this
project's learner so that only the loop's structure differs (one emulator stepped synchronously, the
replay in host memory, eager float32 updates).
"""

from __future__ import annotations

import numpy as np
import torch

from agents.dqn import epsilon_at
from agents.replay import FrameReplay, Transitions
from bench.build import make_learner
from bench.clock import Window
from envs.families import family_of_run, make_env
from ewc_training.config import Config

HOST_REPLAY = 20_000
"""Transitions its host replay holds: a ring, which a long window passes round (speed does not depend on it)."""


def cleanrl_steps_per_second(config: Config, device: torch.device, warmup: float, seconds: float) -> float:
    """The peer the loop must beat, CleanRL's `dqn_atari.py` loop structure: one emulator stepped
    synchronously, one action chosen per step, the replay in host memory (each batch copied to the
    device), eager float32 updates. Same network, optimizer, replay ratio, epsilon schedule and EWC
    penalty as the loop; timed as the loop is, over a window of `seconds` that opens `warmup` seconds
    after its first update (bench/clock.py `Window`)."""
    game, agent = config.run.games[0], config.agent
    family = family_of_run(config.run.games)
    env = make_env(game, 1, config.env)
    observations, _ = env.reset(seed=0)
    learner = make_learner(config, device, "eager")
    replay = FrameReplay(HOST_REPLAY, 1, "cpu", frame_shape=family.frame_shape, history=family.history)
    replay.add_first(torch.from_numpy(observations))
    generator = torch.Generator(device=device)
    window, step = Window(warmup, seconds), 0
    while not window.tick(step, ready=learner.updates > 0):
        step += 1
        epsilon = epsilon_at(step, agent, config.run.steps_per_game)
        action = learner.act(torch.from_numpy(observations).to(device), game, epsilon, generator).cpu()
        observations, rewards, terminated, truncated, _ = env.step(action.numpy())
        replay.add(
            action,
            torch.from_numpy(np.clip(rewards, -1, 1)),
            torch.from_numpy(terminated),
            torch.from_numpy(truncated),
            torch.from_numpy(observations),
        )
        if step % agent.steps_per_update == 0 and len(replay) >= agent.batch_size:
            batch = Transitions(*(tensor.to(device) for tensor in replay.sample(agent.batch_size)))
            learner.update(batch, game)
    env.close()
    return window.rate()
