"""evaluate.py's metrics from a hand-made matrix of raw scores, with exact expected values.

pong, breakout, pong: raw scores are set so that each cell's mean is a chosen human-normalised
score (HNS = (score - random) / (human - random); Pong -20.7 / 14.6, Breakout 1.7 / 30.5), two
episodes per cell around it; a mid-game row (latest.pt) must stay out of every metric.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ewc_evaluation.config import EvalConfig
from ewc_experiments.eval_matrix import MatrixRow, Run, RunEvaluation
from ewc_training.config import build_config

SEQUENCE = ["pong", "breakout", "pong"]
SCORE_OF_HNS = {"pong": lambda h: -20.7 + h * 35.3, "breakout": lambda h: 1.7 + h * 28.8}


def cell(game: str, hns: float, spread: float) -> list[float]:
    middle = SCORE_OF_HNS[game](hns)
    return [middle - spread, middle + spread]


def evaluation() -> RunEvaluation:
    config = build_config(None, ["run.games=[pong, breakout, pong]"])
    run = Run(Path("hand-made"), config, [])
    rows = [
        MatrixRow("after_1_pong.pt", 1, 0, "pong", {"pong": cell("pong", 1.4, 3.0), "breakout": cell("breakout", 0.1, 1.0)}),
        MatrixRow(
            "after_2_breakout.pt", 2, 0, "breakout", {"pong": cell("pong", 0.2, 2.0), "breakout": cell("breakout", 0.5, 4.0)}
        ),
        MatrixRow("latest.pt", 2, 120, "pong", {"pong": cell("pong", 3.0, 0.0), "breakout": cell("breakout", 3.0, 0.0)}),
        MatrixRow("after_3_pong.pt", 3, 0, "pong", {"pong": cell("pong", 0.7, 1.0), "breakout": cell("breakout", 0.3, 2.0)}),
    ]
    return RunEvaluation(run, ["pong", "breakout"], EvalConfig(), 0, rows)


def test_hns_matrix_keeps_game_end_rows_and_averages_episodes():
    assert evaluation().hns() == {
        1: pytest.approx({"pong": 1.4, "breakout": 0.1}, abs=1e-12),
        2: pytest.approx({"pong": 0.2, "breakout": 0.5}, abs=1e-12),
        3: pytest.approx({"pong": 0.7, "breakout": 0.3}, abs=1e-12),
    }


def test_metrics_of_the_hand_made_matrix():
    metrics = evaluation().metrics()
    expected = {
        "final_after_game": 3,
        "final_mean_hns": 0.5,  # (0.7 + 0.3) / 2
        "final_total_clipped_hns": 1.0,  # 0.7 + 0.3
        "forgetting": {"pong": 0.7, "breakout": 0.2},  # max(1.4, 0.2) - 0.7; 0.5 - 0.3 (row 1 predates Breakout)
        "clipped_forgetting": {"pong": 0.7, "breakout": 0.2},
        "mean_forgetting": 0.45,
        "mean_clipped_forgetting": 0.45,
        # pong 1.4 after its first visit, 0.2 before its second; breakout 0.5 after its visit, 0.3 at the end
        "between_visit_forgetting": {"pong": 1.2, "breakout": 0.2},
        "mean_between_visit_forgetting": 0.7,
        "backward_transfer": -0.45,  # ((0.7 - 1.4) + (0.3 - 0.5)) / 2
        "mean_hns_after_game": {1: 0.75, 2: 0.35, 3: 0.5},
        "total_clipped_hns_after_game": {1: 1.1, 2: 0.7, 3: 1.0},  # Pong's 1.4 counts as 1
        "learned_when_trained": {"pong": 1.4, "breakout": 0.5},  # row 1 for pong, row 2 for breakout
    }  # no forward transfer: Atari's human scores are no single-game references
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key


def test_a_game_that_ends_better_than_ever_has_negative_forgetting_and_zero_clipped():
    run = evaluation()
    run.rows[-1].scores["breakout"] = cell("breakout", 0.9, 1.0)  # Breakout ends above its 0.5
    metrics = run.metrics()
    assert metrics["forgetting"] == pytest.approx({"pong": 0.7, "breakout": -0.4}, abs=1e-12)
    assert metrics["clipped_forgetting"] == pytest.approx({"pong": 0.7, "breakout": 0.0}, abs=1e-12)
    assert metrics["mean_forgetting"] == pytest.approx(0.15, abs=1e-12)
    assert metrics["mean_clipped_forgetting"] == pytest.approx(0.35, abs=1e-12)
    assert metrics["backward_transfer"] == pytest.approx(((0.7 - 1.4) + (0.9 - 0.5)) / 2, abs=1e-12)
