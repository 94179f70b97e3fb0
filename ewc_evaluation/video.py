"""Filming one evaluation episode as an mp4 that plays at the game's real speed.

The network sees 84x84 grayscale stacks, which are no pleasure to watch. So two emulators play the
episode side by side: make_env's usual one gives the network its observations, and a `screen=True`
twin, seeded alike and given the same actions, returns the full 210x160 RGB screen. The twin's
rewards and episode ends are checked against the player's at every step. One video frame per agent
step at 60 / FRAMESKIP = 15 frames per second is real time (the ALE runs at 60 Hz).

Writing mp4 needs PyAV (`pip install 'ewc-atari[video]'`), which bundles its own FFmpeg.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agents.dqn import epsilon_greedy
from agents.network import QNetwork
from envs.atari import FRAMESKIP, make_env
from envs.config import EnvConfig
from envs.families import family_of
from ewc_evaluation.config import EvalConfig
from ewc_evaluation.protocol import evaluation_env_config

try:
    import av
except ImportError:  # optional: only --video needs it
    av = None

ALE_FRAMES_PER_SECOND = 60
SCALE = 2
"""Each Atari pixel becomes SCALE x SCALE pixels, so that colour subsampling does not smear it."""


class VideoError(RuntimeError):
    """A video that cannot be made; the message says why."""


def check_video_support(games: list[str] = ()) -> None:
    """Fail before any work when PyAV is missing, or a game has no screen to film (MinAtar)."""
    unfilmable = [game for game in games if family_of(game).name != "atari"]
    if unfilmable:
        raise VideoError(f"--video films Atari screens; {', '.join(unfilmable)} has none (MinAtar is a 10x10 grid)")
    if av is None:
        raise VideoError("--video needs PyAV: pip install 'ewc-atari[video]' (or pip install av)")


def film_episode(network: QNetwork, game: str, protocol: EvalConfig, env_config: EnvConfig, seed: int, path: Path) -> float:
    """Play one episode under the evaluation protocol, write it to `path`; returns its raw score."""
    check_video_support()
    env_config = evaluation_env_config(env_config, protocol)
    device = next(network.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    player, screen = make_env(game, 1, env_config), make_env(game, 1, env_config, screen=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    score, step, ended = 0.0, 0, False
    try:
        observations, _ = player.reset(seed=seed)
        frames, _ = screen.reset(seed=seed)
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=ALE_FRAMES_PER_SECOND // FRAMESKIP)
            stream.width, stream.height, stream.pix_fmt = 160 * SCALE, 210 * SCALE, "yuv420p"
            _write_frame(container, stream, frames[0, -1])
            while not ended:
                frames_in = torch.from_numpy(observations).to(device)
                actions = epsilon_greedy(network, frames_in, game, protocol.epsilon, generator).cpu().numpy()
                observations, rewards, terminated, truncated, _ = player.step(actions)
                frames, screen_rewards, screen_terminated, screen_truncated, _ = screen.step(actions)
                ended = bool(terminated[0] or truncated[0])
                if rewards[0] != screen_rewards[0] or ended != bool(screen_terminated[0] or screen_truncated[0]):
                    raise VideoError(f"{game}: the filming emulator drifted from the playing one at step {step}")
                score += float(rewards[0])
                step += 1
                _write_frame(container, stream, frames[0, -1])
            for packet in stream.encode():  # flush the encoder
                container.mux(packet)
    finally:
        player.close()
        screen.close()
    return score


def _write_frame(container, stream, screen: np.ndarray) -> None:
    """Encode one (210, 160, 3) RGB screen, enlarged SCALE times."""
    enlarged = screen.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(enlarged), format="rgb24")):
        container.mux(packet)
