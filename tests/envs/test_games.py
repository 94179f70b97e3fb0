"""The normalised score every metric uses, worked out by hand from the published reference numbers."""

import math

import pytest

from envs.games import MINATAR_RANDOM_SCORES, MINATAR_REFERENCE_SCORES, normalised_score

# (random agent, single-game reference DQN) as envs/games.py lists them
MINATAR = {
    "minatar:asterix": (0.5, 3.094),
    "minatar:breakout": (0.51, 5.253),
    "minatar:freeway": (0.16, 33.497),
    "minatar:seaquest": (0.1, 1.009),
    "minatar:space_invaders": (2.95, 28.413),
}


@pytest.mark.parametrize("game", sorted(MINATAR))
def test_minatar_score_is_zero_at_random_and_one_at_the_reference(game):
    """(score - random) / (reference - random): 0 plays like a random agent, 1 like the reference DQN."""
    random_score, reference_score = MINATAR[game]
    assert normalised_score(game, random_score) == pytest.approx(0.0, abs=1e-12)
    assert normalised_score(game, reference_score) == pytest.approx(1.0)
    assert normalised_score(game, (random_score + reference_score) / 2) == pytest.approx(0.5)
    assert normalised_score(game, 0.0) < 0  # worse than random is negative


def test_minatar_scores_by_hand():
    # (1.0 - 0.51) / (5.253 - 0.51) = 0.49 / 4.743
    assert normalised_score("minatar:breakout", 1.0) == pytest.approx(0.49 / 4.743)
    # (10 - 2.95) / (28.413 - 2.95) = 7.05 / 25.463
    assert normalised_score("minatar:space_invaders", 10.0) == pytest.approx(7.05 / 25.463)


def test_the_random_end_of_the_references_is_the_measured_random_score():
    for game, (random_score, reference_score) in MINATAR_REFERENCE_SCORES.items():
        assert random_score == MINATAR_RANDOM_SCORES[game] < reference_score, game


def test_every_minatar_game_has_a_score_and_atari_uses_hns():
    from envs import minatar

    assert sorted(MINATAR_REFERENCE_SCORES) == sorted(minatar.GAMES)  # no game drops out of a mean as NaN
    assert math.isnan(normalised_score("tetris", 5.0))  # an Atari game outside the 57 with human scores
    assert normalised_score("pong", -20.7) == pytest.approx(0.0)  # Atari: (score - random) / (human - random)
    assert normalised_score("pong", 14.6) == pytest.approx(1.0)
