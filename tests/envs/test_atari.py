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


def test_each_observation_is_the_last_one_shifted_by_a_frame():
    """The 4-frame stack: o_{t+1}[:3] == o_t[1:] (the oldest frame drops out, a new one comes in)."""
    env = make_env("pong", 2, EnvConfig())
    try:
        observations, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        for _ in range(40):  # no Pong episode ends this early
            following, _, terminated, truncated, _ = env.step(rng.integers(0, NUM_ACTIONS, 2))
            assert not (terminated | truncated).any()
            assert np.array_equal(following[:, :3], observations[:, 1:])
            assert not np.array_equal(following[:, 3], observations[:, 3]) or not following[:, 3].any()
            observations = following
    finally:
        env.close()


def test_a_lost_life_in_breakout_does_not_end_the_episode():
    """Whole games (EWC paper, Machado et al.): losing one of Breakout's 5 lives is no episode end."""
    env = make_env("breakout", 1, EnvConfig())
    try:
        _, info = env.reset(seed=0)
        lives, rng = int(info["lives"][0]), np.random.default_rng(1)
        assert lives == 5
        for _ in range(2000):
            _, _, terminated, truncated, info = env.step(rng.integers(0, NUM_ACTIONS, 1))
            if int(info["lives"][0]) < lives:
                break
        else:
            pytest.fail("random play lost no life in 2,000 steps")
        assert not terminated[0] and not truncated[0]
        for _ in range(5):  # and the same episode goes on
            _, _, terminated, truncated, info = env.step(np.array([1]))
            assert not terminated[0] and not truncated[0] and int(info["lives"][0]) == lives - 1
    finally:
        env.close()
