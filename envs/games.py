"""Game names as users type them, and the reference scores behind human-normalised scores.

A user writes `pong`, `Pong`, `SpaceInvaders`, `space-invaders` or `space_invaders`; all of them
name the ALE ROM `space_invaders`. Names are resolved once, before anything starts, so a typo fails
in a second with the closest valid names instead of after an hour of training on game 1.
"""

from __future__ import annotations

import difflib
import re

import ale_py.roms

from envs import minatar

MINATAR_PREFIX = "minatar:"
"""Games of the MinAtar family are named `minatar:<game>`; bare names are Atari ROMs."""

# Random and human reference scores of the 57 standard Atari games:
# (score of a uniformly random agent, score of a professional human tester), each averaged over
# episodes that start with up to 30 no-ops and are cut at 108,000 frames. The table is DeepMind's
# 57-game one as distributed with DQN Zoo (dqn_zoo/atari_data.py) and used by Agent57 (Badia et al.,
# ICML 2020) and rliable. For the 49 games of DQN (Mnih et al., Nature 2015, Extended Data Table 2)
# its random scores are that paper's, but its human scores are a later measurement, not the Nature
# table's: Alien's human
# score is 7,127.7 here and 6,875 there, Pong's 14.6 and 9.3. HNS values computed against the Nature
# table are therefore not comparable with these.
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}

ATARI_57 = tuple(sorted(REFERENCE_SCORES))


MINATAR_RANDOM_SCORES: dict[str, float] = {
    "asterix": 0.50,
    "breakout": 0.51,
    "freeway": 0.16,
    "seaquest": 0.10,
    "space_invaders": 2.95,
}
"""Mean return of a uniformly random agent per MinAtar game, measured for this project
with the MinAtar environments this project drives; the random end of MINATAR_REFERENCE_SCORES."""

MINATAR_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    # random: MINATAR_RANDOM_SCORES; reference: this project's DQN trained on the game alone with
    # configs/minatar.yaml (150,000 agent steps), its final evaluation (64 episodes), mean over the
    # reference seeds 1000-1004, which no comparison uses: `bash scripts/minatar_experiment.sh
    # sweeps/minatar references`, then `python -m ewc_experiments.results_page
    # docs/results/minatar/references/cells --print-references` (the cells are saved there)
    "asterix": (0.5, 3.094),
    "breakout": (0.51, 5.253),
    "freeway": (0.16, 33.497),
    "seaquest": (0.1, 1.009),
    "space_invaders": (2.95, 28.413),
}
"""MinAtar has no human scores. (random agent, reference agent) per game for the MinAtar-normalised
score (score - random) / (reference - random): 0 plays like a random agent, 1 like the single-game
DQN with the preset's budget. Games without an entry have no normalised score (NaN)."""


class UnknownGameError(ValueError):
    """A game name that matches no ROM shipped with ale-py and no MinAtar game."""


def _normalise(name: str) -> str:
    """`SpaceInvaders`, `space-invaders`, ` Space Invaders ` -> `spaceinvaders` (for matching)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def available_games() -> list[str]:
    """ROM ids that ale-py ships, e.g. `space_invaders` (no AutoROM needed since ale-py 0.9), then
    the MinAtar games, e.g. `minatar:breakout`."""
    return sorted(ale_py.roms.get_all_rom_ids()) + [MINATAR_PREFIX + game for game in minatar.GAMES]


def canonical_game(name: str) -> str:
    """The game id for a name as a user types it; raises UnknownGameError with near matches.

    `minatar:<game>` (prefix case-insensitive) names a MinAtar game; anything else an ALE ROM.
    """
    family_prefix, separator, game = name.strip().partition(":")
    if separator and family_prefix.lower() == MINATAR_PREFIX[:-1]:
        by_key = {_normalise(game_id): MINATAR_PREFIX + game_id for game_id in minatar.GAMES}
        key = _normalise(game)
    else:
        by_key = {_normalise(rom): rom for rom in sorted(ale_py.roms.get_all_rom_ids())}
        key = _normalise(name)
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(by_key[c] for c in close)}?" if close else ""
    raise UnknownGameError(f"unknown game {name!r}{hint} (`python train.py --list-games` lists all)")


def parse_games(text: str) -> list[str]:
    """A comma list of games (repeats allowed: `pong,breakout,pong` revisits Pong); `all57` expands."""
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise UnknownGameError("the game list is empty: pass e.g. --games pong,breakout")
    if not all(names):
        raise UnknownGameError(f"an empty game name in {text!r}: remove the extra comma")
    games: list[str] = []
    for name in names:
        games.extend(ATARI_57 if _normalise(name) == "all57" else [canonical_game(name)])
    return games


def human_normalised_score(game: str, score: float) -> float:
    """HNS = (score - random) / (human - random); NaN for a game outside the 57 with references."""
    if game not in REFERENCE_SCORES:
        return float("nan")
    random_score, human_score = REFERENCE_SCORES[game]
    return (score - random_score) / (human_score - random_score)


def normalised_score(game: str, score: float) -> float:
    """The score every metric uses: HNS on Atari; on MinAtar (score - random) / (reference - random)
    with MINATAR_REFERENCE_SCORES. NaN for a game without references."""
    if not game.startswith(MINATAR_PREFIX):
        return human_normalised_score(game, score)
    references = MINATAR_REFERENCE_SCORES.get(game.removeprefix(MINATAR_PREFIX))
    if references is None:
        return float("nan")
    random_score, reference_score = references
    return (score - random_score) / (reference_score - random_score)
