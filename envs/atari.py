"""Vector Atari environments for training and for evaluation, built on ale-py's C++ vector env.

`AtariVectorEnv` steps N emulators on worker threads and does the standard preprocessing in C++
(84x84 grayscale, 4-frame stack, frame skip 4 with max-pool over the last two frames, up to 30
no-ops, FIRE on reset), so no OpenCV and no Python wrapper sits in the hot loop. It resets a
finished emulator on the *next* step (autoreset NEXT_STEP): the step that ends an episode returns
the real final observation, and the following step returns the reset observation and ignores the
action. The replay buffer relies on exactly that order.
"""

from __future__ import annotations

from ale_py.vector_env import AtariVectorEnv

from envs.config import EnvConfig

NUM_ACTIONS = 18
"""The full ALE action set for every game, so one Q-head serves all games (as in the EWC paper)."""
FRAMESKIP = 4
"""Emulator frames per agent step. The ALE runs at 60 frames per second, so 15 agent steps are
one second of play."""

_NETWORK_IMAGES = dict(img_height=84, img_width=84, grayscale=True, stack_num=4, maxpool=True)
_SCREEN_IMAGES = dict(img_height=210, img_width=160, grayscale=False, stack_num=1, maxpool=False)


def make_env(game: str, num_envs: int, env_config: EnvConfig, *, screen: bool = False) -> AtariVectorEnv:
    """Vector env for one game, returning raw game scores.

    Rewards come back unclipped so that logs show real scores; the trainer clips them to [-1, 1]
    before they enter the replay. No episode ends on a lost life: the EWC paper and the
    Machado et al. protocol play whole games, and evaluation must too.

    `screen=True` returns the full RGB screen (N, 1, 210, 160, 3) of every agent step instead of
    the network's 84x84 grayscale stacks. Only the images differ: with the same seed and actions
    it plays the same episode as the default env, which is how an evaluation episode is filmed.
    """
    images = _SCREEN_IMAGES if screen else _NETWORK_IMAGES
    return AtariVectorEnv(
        game,
        num_envs,
        full_action_space=True,
        repeat_action_probability=env_config.sticky_action_prob,
        max_num_frames_per_episode=env_config.max_episode_frames,
        noop_max=env_config.noop_max,
        reward_clipping=False,
        episodic_life=False,
        use_fire_reset=True,
        frameskip=FRAMESKIP,
        **images,
    )
