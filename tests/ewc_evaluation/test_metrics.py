"""Continual-learning metrics on hand-made HNS matrices whose answers are worked out by hand."""

import math

import pytest

from ewc_evaluation.metrics import (
    backward_transfer,
    between_visit_forgetting,
    clipped_forgetting,
    forgetting,
    mean_hns,
    mean_hns_after_each_game,
    summarise,
    total_clipped_hns_after_each_game,
)

SEQUENCE = ["pong", "breakout", "seaquest"]
# R[k][game]: Breakout scores 0.9 before it is ever trained; forgetting must not count that.
MATRIX = {
    1: {"pong": 0.5, "breakout": 0.9, "seaquest": 0.1},
    2: {"pong": 0.3, "breakout": 0.8, "seaquest": 0.1},
    3: {"pong": 0.2, "breakout": 0.6, "seaquest": 0.9},
}


def test_mean_hns_after_each_game_averages_the_sequence_games():
    assert mean_hns_after_each_game(MATRIX, SEQUENCE) == pytest.approx({1: 0.5, 2: 0.4, 3: 1.7 / 3})


def test_forgetting_is_best_earlier_checkpoint_since_first_trained_minus_final():
    # pong: max(0.5, 0.3) - 0.2; breakout: 0.8 - 0.6 (row 1 is before its training);
    # seaquest is trained last and cannot have been forgotten.
    assert forgetting(MATRIX, SEQUENCE) == pytest.approx({"pong": 0.3, "breakout": 0.2})


def test_forgetting_is_negative_when_a_game_ends_better_than_ever_and_the_clipped_one_is_zero():
    sequence = ["pong", "breakout"]
    matrix = {1: {"pong": 0.4, "breakout": 0.0}, 2: {"pong": 0.9, "breakout": 0.5}}
    assert forgetting(matrix, sequence) == pytest.approx({"pong": -0.5})  # Chaudhry et al.: 0.4 - 0.9
    assert clipped_forgetting(matrix, sequence) == pytest.approx({"pong": 0.0})  # max(0.4, 0.9) - 0.9
    summary = summarise(matrix, sequence)
    assert summary["mean_forgetting"] == pytest.approx(-0.5)
    assert summary["mean_clipped_forgetting"] == pytest.approx(0.0)


def test_total_clipped_hns_sums_each_game_clipped_at_one():
    # Kirkpatrick et al. Fig. 4: row 1 0.5 + 0.9 + 0.1; row 3 0.2 + 0.6 + 0.9; a 3.0 counts as 1.
    assert total_clipped_hns_after_each_game(MATRIX, SEQUENCE) == pytest.approx({1: 1.5, 2: 1.2, 3: 1.7})
    matrix = {1: {"pong": 3.0, "breakout": -0.2, "tetris": math.nan}}
    assert total_clipped_hns_after_each_game(matrix, ["pong", "breakout", "tetris"]) == pytest.approx({1: 0.8})
    assert summarise(MATRIX, SEQUENCE)["final_total_clipped_hns"] == pytest.approx(1.7)
    assert math.isnan(total_clipped_hns_after_each_game({1: {"tetris": math.nan}}, ["tetris"])[1])  # no references at all


def test_backward_transfer_compares_final_with_just_trained():
    # ((0.2 - 0.5) + (0.6 - 0.8)) / 2
    assert backward_transfer(MATRIX, SEQUENCE) == pytest.approx(-0.25)


def test_a_revisited_game_is_measured_from_its_first_training():
    sequence = ["pong", "breakout", "pong"]
    matrix = {1: {"pong": 0.6, "breakout": 0.0}, 2: {"pong": 0.1, "breakout": 0.5}, 3: {"pong": 0.7, "breakout": 0.2}}
    # pong: max(0.6, 0.1) - 0.7 (it ended better after its revisit); breakout: 0.5 - 0.2
    assert forgetting(matrix, sequence) == pytest.approx({"pong": -0.1, "breakout": 0.3})
    assert clipped_forgetting(matrix, sequence) == pytest.approx({"pong": 0.0, "breakout": 0.3})
    # position 1 (pong): 0.7 - 0.6; position 2 (breakout): 0.2 - 0.5
    assert backward_transfer(matrix, sequence) == pytest.approx(-0.1)
    assert mean_hns_after_each_game(matrix, sequence)[3] == pytest.approx(0.45)


def test_missing_checkpoints_are_skipped_and_the_last_row_is_final():
    without_middle = {k: MATRIX[k] for k in (1, 3)}
    # breakout's only row since it was trained is the final one: no earlier checkpoint to forget from.
    assert forgetting(without_middle, SEQUENCE) == pytest.approx({"pong": 0.3})
    assert clipped_forgetting(without_middle, SEQUENCE) == pytest.approx({"pong": 0.3, "breakout": 0.0})
    assert backward_transfer(without_middle, SEQUENCE) == pytest.approx(-0.3)  # position 1 only
    first_two = {k: MATRIX[k] for k in (1, 2)}
    summary = summarise(first_two, SEQUENCE)
    assert summary["final_after_game"] == 2
    assert summary["final_mean_hns"] == pytest.approx(0.4)
    assert summary["forgetting"] == pytest.approx({"pong": 0.2})


def test_games_without_reference_scores_are_left_out_of_means():
    assert mean_hns([0.2, math.nan, 0.4]) == pytest.approx(0.3)
    assert math.isnan(mean_hns([math.nan]))
    matrix = {1: {"pong": 0.5, "tetris": math.nan}, 2: {"pong": 0.1, "tetris": math.nan}}
    summary = summarise(matrix, ["pong", "tetris"])
    assert summary["final_mean_hns"] == pytest.approx(0.1)
    assert summary["mean_forgetting"] == pytest.approx(0.4)


def test_extra_evaluated_games_do_not_enter_the_sequence_metrics():
    matrix = {1: {"pong": 0.5, "breakout": 0.1, "seaquest": 5.0}, 2: {"pong": 0.3, "breakout": 0.7, "seaquest": 5.0}}
    summary = summarise(matrix, ["pong", "breakout"])
    assert summary["final_mean_hns"] == pytest.approx(0.5)
    assert set(summary["forgetting"]) == {"pong"}


def test_forgetting_between_visits_sees_a_loss_that_a_revisit_repaired():
    """docs/evaluation.md's example: pong 1.0 after its visit, 0.0 after breakout, 1.0 after its revisit."""
    sequence = ["pong", "breakout", "pong"]
    matrix = {1: {"pong": 1.0, "breakout": 0.0}, 2: {"pong": 0.0, "breakout": 0.5}, 3: {"pong": 1.0, "breakout": 0.2}}
    assert forgetting(matrix, sequence)["pong"] == pytest.approx(0.0)  # max(1.0, 0.0) - 1.0: the loss is invisible
    # pong: visit 1 to row 2, 1.0 - min(1.0, 0.0); its revisit is the last row. breakout: 0.5 - min(0.5, 0.2)
    assert between_visit_forgetting(matrix, sequence) == pytest.approx({"pong": 1.0, "breakout": 0.3})
    summary = summarise(matrix, sequence)
    assert summary["between_visit_forgetting"] == pytest.approx({"pong": 1.0, "breakout": 0.3})
    assert summary["mean_between_visit_forgetting"] == pytest.approx(0.65)
    assert summary["mean_forgetting"] == pytest.approx(0.15)  # (0.0 + 0.3) / 2


def test_forgetting_between_visits_takes_each_visits_lowest_later_score_and_the_largest_loss():
    sequence = ["pong", "breakout", "pong", "breakout", "seaquest"]
    matrix = {
        1: {"pong": 0.6, "breakout": 0.0, "seaquest": 0.0},
        2: {"pong": 0.9, "breakout": 0.8, "seaquest": 0.0},  # breakout helped pong: no loss yet
        3: {"pong": 1.0, "breakout": 0.5, "seaquest": 0.0},
        4: {"pong": 0.7, "breakout": 0.9, "seaquest": 0.1},
        5: {"pong": 0.2, "breakout": 1.2, "seaquest": 0.4},
    }
    # pong: visit 1 -> rows 1..2: 0.6 - 0.6 = 0; visit 3 -> rows 3..5: 1.0 - 0.2 = 0.8
    # breakout: visit 2 -> rows 2..3: 0.8 - 0.5 = 0.3; visit 4 -> rows 4..5: 0.9 - 0.9 = 0 (it only rose)
    # seaquest is trained last: nothing after it
    assert between_visit_forgetting(matrix, sequence) == pytest.approx({"pong": 0.8, "breakout": 0.3})
    # rows 3 and 4 not evaluated: pong's first visit sees row 2 only and its revisit's row is missing;
    # breakout's first visit has no evaluated row before its next, whose own row is missing: left out
    partial = {k: matrix[k] for k in (1, 2, 5)}
    assert between_visit_forgetting(partial, sequence) == pytest.approx({"pong": 0.0})
    # only the first three rows evaluated: the third is final, and pong's revisit has nothing after it
    assert between_visit_forgetting({k: matrix[k] for k in (1, 2, 3)}, sequence) == pytest.approx({"pong": 0.0, "breakout": 0.3})


def test_forgetting_between_visits_of_a_game_trained_twice_in_a_row_is_zero():
    """p, p: the first visit is followed at once by the second, so nothing was lost between them."""
    matrix = {1: {"p": 1.0}, 2: {"p": 0.5}}
    assert forgetting(matrix, ["p", "p"]) == pytest.approx({"p": 0.5})
    assert between_visit_forgetting(matrix, ["p", "p"]) == pytest.approx({"p": 0.0})


def test_forward_transfer_is_each_later_games_first_score_minus_its_single_game_score():
    """pong, breakout, pong: breakout learned to 0.4 where alone it reaches 0.5 (FT -0.1); the first game
    and revisits have no forward transfer; learned-when-trained is each game's first row."""
    matrix = {1: {"pong": 0.8, "breakout": 0.0}, 2: {"pong": 0.1, "breakout": 0.4}, 3: {"pong": 0.9, "breakout": 0.2}}
    sequence = ["pong", "breakout", "pong"]
    summary = summarise(matrix, sequence, {"pong": 1.0, "breakout": 0.5})
    assert summary["learned_when_trained"] == {"pong": 0.8, "breakout": 0.4}
    assert summary["forward_transfer"] == pytest.approx({"breakout": -0.1})
    assert summary["mean_forward_transfer"] == pytest.approx(-0.1)
    assert "forward_transfer" not in summarise(matrix, sequence)  # no reference, no figure


def test_minatar_runs_of_the_reference_agent_and_budget_have_single_game_references_of_one():
    from ewc_experiments.eval_matrix import single_game_references
    from ewc_training.config import build_config

    games = ["minatar:breakout", "minatar:space_invaders"]
    preset = build_config("configs/minatar.yaml", [f"run.games=[{', '.join(games)}]"])
    assert single_game_references(games, preset) == {"minatar:breakout": 1.0, "minatar:space_invaders": 1.0}
    longer = build_config("configs/minatar.yaml", [f"run.games=[{', '.join(games)}]", "run.steps_per_game=300000"])
    modulated = build_config("configs/minatar.yaml", [f"run.games=[{', '.join(games)}]", "network.per_game_modulation=true"])
    assert single_game_references(games, longer) is None and single_game_references(games, modulated) is None
    assert single_game_references(["pong", "breakout"], build_config(None, [])) is None
