import numpy as np
import pytest

from envs.atari import NUM_ACTIONS, make_env
from envs.config import EnvConfig
from envs.games import (
    ATARI_57,
    REFERENCE_SCORES,
    UnknownGameError,
    available_games,
    canonical_game,
    human_normalised_score,
    parse_games,
)


@pytest.mark.parametrize("game", ["pong", "breakout", "space_invaders", "ms_pacman"])
def test_every_game_has_full_action_set_and_stacked_84x84_frames(game):
    env = make_env(game, 2, EnvConfig(max_episode_frames=400))
    try:
        assert env.single_action_space.n == NUM_ACTIONS == 18
        observations, _ = env.reset(seed=0)
        assert observations.shape == (2, 4, 84, 84) and observations.dtype == np.uint8
        observations, rewards, terminated, truncated, _ = env.step(np.full(2, 17, dtype=np.int64))
        assert observations.shape == (2, 4, 84, 84)
        assert rewards.shape == terminated.shape == truncated.shape == (2,)
    finally:
        env.close()


def test_same_seed_gives_same_observations():
    def rollout():
        env = make_env("breakout", 2, EnvConfig())
        obs, _ = env.reset(seed=7)
        frames = [obs]
        for action in [1, 3, 4, 2, 0, 5]:
            frames.append(env.step(np.full(2, action, dtype=np.int64))[0])
        env.close()
        return np.stack(frames)

    assert np.array_equal(rollout(), rollout())


@pytest.mark.parametrize(
    "typed, rom",
    [
        ("pong", "pong"),
        ("Pong", "pong"),
        ("SpaceInvaders", "space_invaders"),
        ("space-invaders", "space_invaders"),
        ("MS_PACMAN", "ms_pacman"),
        ("MsPacman", "ms_pacman"),
    ],
)
def test_names_as_users_type_them(typed, rom):
    assert canonical_game(typed) == rom


def test_unknown_game_is_rejected_with_close_names():
    with pytest.raises(UnknownGameError, match="did you mean.*space_invaders"):
        parse_games("pong,spaceinvader")
    with pytest.raises(UnknownGameError, match="empty"):
        parse_games(" , ")


def test_game_list_keeps_order_and_repeats():
    assert parse_games("pong, Breakout ,pong") == ["pong", "breakout", "pong"]
    assert parse_games("all57") == list(ATARI_57)


def test_reference_scores_cover_the_57_games_and_normalise():
    assert len(REFERENCE_SCORES) == 57 and set(ATARI_57) <= set(available_games())
    assert human_normalised_score("pong", -20.7) == pytest.approx(0.0)
    assert human_normalised_score("pong", 14.6) == pytest.approx(1.0)
    assert np.isnan(human_normalised_score("tetris", 10))
