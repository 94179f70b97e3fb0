import pytest

from ewc_training.config import Config, ConfigError, apply_override, build_config, config_from_dict
from tests.conftest import ROOT


def test_presets_load_and_override_in_order(tmp_path):
    paper = build_config(ROOT / "configs" / "paper.yaml", ["agent.learning_rate=1e-3"])
    assert paper.network.architecture == "large" and paper.network.per_game_modulation
    assert paper.agent.optimizer == "rmsprop" and paper.agent.replay_capacity == 50_000
    assert paper.agent.learning_rate == 1e-3  # the flag wins over the preset
    assert build_config(ROOT / "configs" / "default.yaml").to_dict() == Config().to_dict()
    build_config(ROOT / "configs" / "smoke.yaml")


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("agent.learning_rat=3", "did you mean 'agent.learning_rate'"),
        ("agnt.gamma=0.9", "did you mean 'agent'"),
        ("agent.batch_size=big", "agent.batch_size must be int"),
        ("run.games=pong", "run.games must be a list"),
        ("nodot", "section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ConfigError, match=message):
        apply_override(Config(), assignment)


def test_yaml_that_does_not_parse_is_a_config_error(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("agent:\n  learning_rate: [1e-4\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(broken)


def test_round_trip_through_dict():
    config = build_config(None, ["consolidation.method=l2", "run.games=[pong, breakout, pong]"])
    assert config_from_dict(config.to_dict()) == config
