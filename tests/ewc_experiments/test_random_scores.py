"""The random-play references command: uniformly random actions through a preset's evaluation protocol."""

from __future__ import annotations

import numpy as np

from ewc_experiments import random_scores


def test_random_play_is_repeatable_and_scores_like_random(capsys):
    first = random_scores.random_scores(["minatar:breakout"], "configs/minatar.yaml", episodes=32, seed=3)
    again = random_scores.random_scores(["minatar:breakout"], "configs/minatar.yaml", episodes=32, seed=3)
    assert np.array_equal(first["minatar:breakout"], again["minatar:breakout"]) and len(first["minatar:breakout"]) == 32
    assert 0.0 <= first["minatar:breakout"].mean() < 2.0  # random breakout rarely hits a brick twice (0.51 held)
    assert random_scores.main(["--config", "configs/minatar.yaml", "--games", "minatar:breakout", "--episodes", "8"]) == 0
    assert "| minatar:breakout |" in capsys.readouterr().out and random_scores.held_value("minatar:breakout") == 0.51


def test_games_of_two_families_are_one_error_line(capsys):
    assert random_scores.main(["--games", "pong,minatar:breakout", "--episodes", "2"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
