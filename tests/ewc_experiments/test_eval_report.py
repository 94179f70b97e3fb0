"""evaluate.py's report from hand-made matrices: protocol provenance, normalisation labels, the figure.

No emulator runs here: the scores are set by hand, so each test is about what is written, not played.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from ewc_experiments.eval_matrix import MatrixRow, Run, RunError, RunEvaluation, run_protocol
from ewc_experiments.eval_report import as_dict, comparison_markdown, matrix_figure, matrix_markdown
from ewc_training.config import build_config

MINATAR = ["minatar:breakout", "minatar:space_invaders"]
LONG_NAME = "minatar_breakout-minatar_space_invaders-online-ewc-s12-20261204-140738"


def minatar_evaluation(name: str = LONG_NAME, *overrides: str, flags: dict | None = None) -> RunEvaluation:
    """A MinAtar run of two games, scored with its config's protocol (or `flags`), with a mid-game row."""
    config = build_config("configs/minatar.yaml", ["run.games=[minatar:breakout, minatar:space_invaders]", *overrides])
    run = Run(Path("runs") / name, config, [])
    rows = [
        MatrixRow("after_1_minatar_breakout.pt", 1, 0, MINATAR[0], {game: [3.0, 5.0] for game in MINATAR}),
        MatrixRow("latest.pt", 1, 30_000, MINATAR[1], {game: [1.0, 2.0] for game in MINATAR}),
        MatrixRow("after_2_minatar_space_invaders.pt", 2, 0, MINATAR[1], {game: [4.0, 6.0] for game in MINATAR}),
    ]
    return RunEvaluation(run, MINATAR, run_protocol(run, flags or {}), 0, rows)


def test_the_protocol_is_the_runs_own_unless_a_flag_changes_it():
    evaluation = minatar_evaluation(flags={"episodes": 4, "epsilon": None})
    assert (evaluation.protocol.episodes, evaluation.protocol.epsilon, evaluation.protocol.max_episode_frames) == (
        4,
        0.05,
        10_000,
    )
    saved = as_dict(evaluation)["protocol"]
    assert saved["sources"] == {"episodes": "flag", "epsilon": "run config", "max_episode_frames": "run config"}
    assert (saved["sticky_action_prob"], saved["difficulty_ramping"]) == (0.1, True)
    opening = matrix_markdown(evaluation).split("## ")[0]
    assert "4 episodes per cell (flag)" in opening
    assert "episodes cut at 10,000 agent steps (run config)" in opening  # MinAtar counts agent steps
    assert "sticky actions 0.1 (run config)" in opening and "difficulty ramping on (run config)" in opening


def test_a_config_that_never_evaluated_needs_the_flag():
    with pytest.raises(RunError, match=r"eval.episodes=0; give --episodes"):
        minatar_evaluation(LONG_NAME, "eval.eval_every=0", "eval.episodes=0")


def test_minatar_labels_name_the_minatar_normalisation():
    report = matrix_markdown(minatar_evaluation())
    assert "HNS" not in report and "human-normalised" not in report
    assert "- final mean MinAtar-normalised score: " in report
    assert "- final total clipped MinAtar-normalised score " in report
    assert "| final mean MinAtar-normalised score |" in comparison_markdown([minatar_evaluation()])


def test_the_comparison_says_when_runs_were_scored_differently():
    alike = comparison_markdown([minatar_evaluation("a"), minatar_evaluation("b")])
    differ = comparison_markdown([minatar_evaluation("a"), minatar_evaluation("b", "env.sticky_action_prob=0.0")])
    assert "different protocols" not in alike
    assert "scored with different protocols" in differ


def test_every_text_of_the_matrix_figure_fits_inside_it():
    figure = matrix_figure(minatar_evaluation())
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    bounds = figure.bbox
    texts = [text for text in figure.findobj(Text) if text.get_visible() and text.get_text()]
    assert any(LONG_NAME[:20] in text.get_text() for text in texts)  # the title is among them
    assert any("MinAtar-normalised" in text.get_text() for text in texts)  # and the colour bar's label
    for text in texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= bounds.x0 and box.x1 <= bounds.x1, text.get_text()
        assert box.y0 >= bounds.y0 and box.y1 <= bounds.y1, text.get_text()


def test_a_protocol_that_cuts_episodes_short_of_the_references_says_its_scores_are_not_comparable():
    """The smoke preset cuts Atari episodes at 2,000 frames: a losing Pong game then ends near 0, not -21."""
    config = build_config("configs/smoke.yaml", ["run.games=[pong, breakout]"])
    run = Run(Path("runs") / "smoke", config, [])
    rows = [MatrixRow("after_1_pong.pt", 1, 0, "pong", {"pong": [-2.0], "breakout": [1.0]})]
    short = RunEvaluation(run, ["pong", "breakout"], run_protocol(run, {}), 0, rows)
    assert "**warning: episodes are cut at 2,000 frames, short of the 108,000" in matrix_markdown(short)
    assert as_dict(short)["protocol"]["comparable_with_references"] is False
    full = RunEvaluation(run, ["pong", "breakout"], run_protocol(run, {"max_episode_frames": 108_000}), 0, rows)
    assert "warning" not in matrix_markdown(full) and as_dict(full)["protocol"]["comparable_with_references"]
    assert "warning" not in matrix_markdown(minatar_evaluation())  # MinAtar's 10,000 steps are its references'
