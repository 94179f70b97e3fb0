"""What train.py says before training about settings that make part of a run do nothing."""

from ewc_training.config import Config
from ewc_training.launch import warn_if_never_learning


def test_a_game_that_ends_before_learning_starts_is_announced(capsys):
    config = Config()
    config.run.steps_per_game, config.agent.learning_starts = 400, 1_000
    warn_if_never_learning(config)
    assert capsys.readouterr().err == (
        "warning: no game will learn: each ends after 400 agent steps, before agent.learning_starts=1,000\n"
    )
    config.run.steps_per_game = 1_001
    warn_if_never_learning(config)
    assert capsys.readouterr().err == ""
