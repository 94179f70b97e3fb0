"""The random end of the normalisation: a uniformly random agent's score per game, with its standard
error, under a preset's evaluation protocol (the same emulators, sticky actions, no-ops or difficulty
ramping, and episode cap its runs are scored with).

    python -m ewc_experiments.random_scores --config configs/minatar.yaml \\
        --games minatar:asterix,minatar:breakout,minatar:freeway,minatar:seaquest,minatar:space_invaders

It plays `--episodes` episodes per game through the evaluation protocol with epsilon 1 (every action
uniform over the family's action set, the network never consulted), and prints per game the mean
return, its standard error sd / sqrt(n), and the value envs/games.py holds, so a reference can be
checked or measured again.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import numpy as np
import torch

from agents.build import build_network
from envs.families import family_of_run
from envs.games import MINATAR_PREFIX, MINATAR_RANDOM_SCORES, REFERENCE_SCORES, parse_games
from ewc_evaluation.protocol import play_episodes
from ewc_experiments.cli import USER_ERRORS, OneLineParser, fail, positive_int
from ewc_training.config import build_config


def random_scores(games: list[str], config_path: str | None, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Every game's episode returns under uniformly random actions (the preset's protocol otherwise)."""
    config = build_config(config_path, [f"run.games=[{', '.join(games)}]"])
    protocol = dataclasses.replace(config.eval, episodes=episodes, epsilon=1.0)
    network = build_network(config.network, games, family_of_run(games))  # built for its shape, never consulted
    return {game: play_episodes(network, game, protocol, config.env, seed) for game in games}


def held_value(game: str) -> float | None:
    """The random score envs/games.py holds for `game`, if any."""
    if game.startswith(MINATAR_PREFIX):
        return MINATAR_RANDOM_SCORES.get(game.removeprefix(MINATAR_PREFIX))
    return REFERENCE_SCORES[game][0] if game in REFERENCE_SCORES else None


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", required=True, help="comma list of one family's games")
    parser.add_argument("--config", help="the preset whose evaluation protocol to use (e.g. configs/minatar.yaml)")
    parser.add_argument("--episodes", type=positive_int, default=1000, help="episodes per game (default 1,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        games = list(dict.fromkeys(parse_games(args.games)))
        started = time.perf_counter()
        scores = random_scores(games, args.config, args.episodes, args.seed)
    except USER_ERRORS as error:
        return fail(error)
    print("| game | random return | standard error | episodes | envs/games.py |")
    print("|---|---|---|---|---|")
    for game, values in scores.items():
        error = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
        held = held_value(game)
        print(f"| {game} | {values.mean():.3f} | {error:.3f} | {len(values)} | {'–' if held is None else f'{held:g}'} |")
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
