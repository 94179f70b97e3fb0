"""`--sequence random:N`: the paper's random order with revisits, drawn from the seed, in train.py and sweep.py."""

from collections import Counter

import pytest

import sweep
import train
from ewc_experiments.cli import config_from_train_args, parse_train_args
from ewc_experiments.sequences import draw_sequence, parse_sequence_rule
from ewc_experiments.sweep_plan import plan_sweep
from tests.conftest import ROOT

GAMES = ["pong", "breakout", "enduro"]


@pytest.mark.parametrize("segments", [3, 4, 7, 12])
def test_every_game_at_least_once_and_never_twice_in_a_row(segments):
    for seed in range(20):
        drawn = draw_sequence(GAMES, segments, seed)
        assert len(drawn) == segments and set(drawn) == set(GAMES)
        assert all(a != b for a, b in zip(drawn, drawn[1:])), drawn


def test_the_papers_pool_of_19_games_in_20_segments_is_drawn_at_once():
    """Valid orders are a tiny fraction of all walks here: rejection sampling would not find one."""
    pool = [f"game{i}" for i in range(19)]
    for seed in range(5):
        drawn = draw_sequence(pool, 20, seed)
        assert set(drawn) == set(pool) and all(a != b for a, b in zip(drawn, drawn[1:]))


def test_the_seed_fixes_the_draw_and_the_draws_vary():
    assert draw_sequence(GAMES, 6, 1) == draw_sequence(GAMES, 6, 1)
    assert len({tuple(draw_sequence(GAMES, 6, seed)) for seed in range(20)}) > 10
    assert draw_sequence(GAMES + ["pong"], 6, 1) == draw_sequence(GAMES, 6, 1)  # repeats in --games are ignored


def test_the_draw_is_close_to_uniform_over_valid_orders():
    # 3 games, 4 segments, no game twice in a row, all three visited: 18 valid orders.
    counts = Counter(tuple(draw_sequence(GAMES, 4, seed)) for seed in range(3600))
    assert len(counts) == 18
    assert min(counts.values()) > 120 and max(counts.values()) < 290  # 200 expected each


@pytest.mark.parametrize(
    "rule, games, message",
    [
        ("random:2", GAMES, "cannot visit all 3 games"),
        ("random:3", ["pong"], "needs at least two games"),
        ("shuffle:3", GAMES, "--sequence must look like random:SEGMENTS"),
        ("random:x", GAMES, "--sequence must look like random:SEGMENTS"),
        ("random:0", GAMES, "--sequence must look like random:SEGMENTS"),
        ("random:\u00b2", GAMES, "--sequence must look like random:SEGMENTS"),  # a superscript two is a digit to str.isdigit
        ("random:10001", GAMES, "SEGMENTS <= 10,000"),
    ],
)
def test_impossible_rules_are_one_line_errors(rule, games, message):
    with pytest.raises(ValueError, match=message):
        draw_sequence(games, parse_sequence_rule(rule), 0)


def test_train_py_draws_the_order_from_its_seed(capsys):
    config = config_from_train_args(
        parse_train_args(["--games", "pong,breakout,enduro", "--sequence", "random:5", "--seed", "4"])
    )
    assert config.run.games == draw_sequence(GAMES, 5, 4)
    assert f"training order (random:5, seed 4): {' -> '.join(config.run.games)}" in capsys.readouterr().err


def test_train_py_bad_rule_is_one_line_and_exit_2(tmp_path, capsys):
    assert train.main(["--games", "pong,breakout", "--sequence", "random:1", "--run-dir", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot visit all 2 games" in error
    assert not (tmp_path / "r").exists()


def test_a_resume_never_draws_again(capsys):
    with pytest.raises(SystemExit):
        parse_train_args(["--resume", "runs/x", "--sequence", "random:4"])
    assert "drop --sequence" in capsys.readouterr().err


def test_a_sweep_trains_each_seeds_drawn_order_for_every_method(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = sweep.parse_args(
        [
            *("--games", "pong,breakout,enduro", "--sequence", "random:4", "--seeds", "0,1,2"),
            *("--methods", "ewc,finetune", "--ewc-lambda", "100", "--sweep-dir", str(tmp_path / "s")),
        ]
    )
    _, planned = plan_sweep(args)
    assert len(planned) == 6
    for planned_cell in planned:
        cell = planned_cell.cell
        assert list(cell.order) == draw_sequence(GAMES, 4, cell.seed)
        assert planned_cell.commands[0][planned_cell.commands[0].index("--games") + 1] == ",".join(cell.order)


def test_a_sweep_refuses_sequence_with_orders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    argv = ["--games", "pong,breakout", "--sequence", "random:3", "--orders", "both", "--sweep-dir", str(tmp_path / "s")]
    assert sweep.main(argv) == 2
    assert "--sequence draws each seed's order; drop --orders" in capsys.readouterr().err
