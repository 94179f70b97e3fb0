"""consolidation.consolidate_after_steps: a game gets its EWC term only once trained that long in all."""

import torch

from agents.build import build_learner
from agents.ewc.boundary import consolidate_game
from agents.replay import FrameReplay
from envs.families import family_of
from ewc_training.config import build_config

GAME = "minatar:breakout"


def filled_replay(family, steps=40, num_envs=2) -> FrameReplay:
    g = torch.Generator().manual_seed(0)
    replay = FrameReplay(100, num_envs, torch.device("cpu"), seed=0, frame_shape=family.frame_shape, history=family.history)

    def frames():
        return torch.randint(0, 2, (num_envs, *family.observation_shape), dtype=torch.uint8, generator=g)

    replay.add_first(frames())
    for _ in range(steps):
        none = torch.zeros(num_envs, dtype=torch.bool)
        replay.add(torch.randint(0, family.num_actions, (num_envs,), generator=g), torch.zeros(num_envs), none, none, frames())
    return replay


def test_a_game_is_consolidated_only_from_the_threshold_on():
    family = family_of(GAME)
    config = build_config(
        None, ["network.architecture=minatar", "consolidation.consolidate_after_steps=1000", "consolidation.fisher_samples=16"]
    )
    learner = build_learner(config, [GAME], family, torch.device("cpu"), seed=0)
    replay = filled_replay(family)

    early = consolidate_game(learner, replay, GAME, config.consolidation, trained_steps=999)
    assert not early.consolidated and early.fisher is None and early.fisher_seconds is None
    assert learner.consolidation.per_game == {}  # no term: the penalty is still zero
    assert learner.consolidation.penalty(learner.online).item() == 0.0
    assert early.probe is not None  # retention is still measured

    enough = consolidate_game(learner, replay, GAME, config.consolidation, trained_steps=1000)
    assert enough.consolidated and enough.fisher is not None
    assert list(learner.consolidation.per_game) == [GAME]
    assert learner.consolidation.penalty(learner.online).item() == 0.0  # at its anchor, but now a term
