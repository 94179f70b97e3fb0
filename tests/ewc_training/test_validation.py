"""Settings that would fail late (after a game of training) are refused up front, naming the key."""

import pytest

from ewc_experiments.cli import config_from_train_args, parse_train_args
from ewc_training.config import ConfigError
from ewc_training.schedule import SEED_LIMIT, env_seed


def resolve(*argv):
    return config_from_train_args(parse_train_args(list(argv)))


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("consolidation.fisher_batch_size=0", "consolidation.fisher_batch_size"),
        ("consolidation.fisher_samples=0", "consolidation.fisher_samples"),
        ("consolidation.policy_temperature=0", "consolidation.policy_temperature"),
        ("consolidation.online_gamma=-3", "consolidation.online_gamma"),
        ("agent.epsilon_end=5", "agent.epsilon_end"),
        ("agent.learning_rate=-1e-4", "agent.learning_rate"),
        ("agent.replay_capacity=10", "agent.replay_capacity"),
        ("env.max_episode_frames=8", "env.max_episode_frames"),
        ("eval.episodes=0", "eval.episodes"),
        ("run.seed=-1", "run.seed"),
    ],
)
def test_out_of_range_settings_are_refused(assignment, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve("--set", "eval.eval_every=1000", "--set", assignment)


def test_set_overrides_games_flag():
    assert resolve("--games", "breakout", "--set", "run.games=[Pong]").run.games == ["pong"]
    assert resolve("--games", "SpaceInvaders,pong").run.games == ["space_invaders", "pong"]


def test_emulator_seeds_stay_in_int32_for_any_valid_seed():
    for seed in (0, 2147, 3000, 2**31 - 1):
        for game_index in (0, 5):
            assert 0 <= env_seed(seed, game_index, 10_000_000) < SEED_LIMIT <= 2**31 - 256


@pytest.mark.parametrize("games", ["pong,,breakout", "pong,", ",pong"])
def test_an_empty_game_name_is_refused(games):
    with pytest.raises(ValueError, match="an empty game name"):
        resolve("--games", games)


def test_a_network_made_for_another_game_family_is_refused_naming_the_preset():
    with pytest.raises(ConfigError, match=r"network\.architecture=minatar is made for minatar games.*configs/minatar\.yaml"):
        resolve("--config", "configs/minatar.yaml", "--games", "pong,breakout")
    with pytest.raises(ConfigError, match=r"network\.architecture=nature is made for atari games"):
        resolve("--games", "minatar:breakout")
    assert resolve("--config", "configs/minatar.yaml", "--games", "minatar:breakout").network.architecture == "minatar"
