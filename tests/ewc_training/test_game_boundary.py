"""The loop's wiring at a game boundary, watched in real two-game runs.

The maths (Fisher, folded penalty, replay) is tested against references elsewhere; here the question
is what the training loop feeds them: the Fisher of a game must come from that game's own replay,
at the weights and with the per-game biases and gains of that moment; the next game must start with
the target network synced, Adam's moments kept (agents/dqn.py `start_game`) and a replay that holds
none of the previous game's frames. The run is observed, never changed: the trainer's own
`finish_game` and the learner's own `update` are wrapped to record what they receive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from agents.build import build_network
from agents.ewc.fisher import diagonal_fisher
from agents.replay import FrameReplay, Transitions
from envs.families import family_of_run
from ewc_training.config import build_config
from ewc_training.logger import MemoryLogger
from ewc_training.schedule import replay_capacity
from ewc_training.trainer import SequenceTrainer
from tests.agents.ewc.test_fisher import brute_force

STEPS = 400
LEARNING_STARTS = 200
STEPS_PER_UPDATE = 4
UPDATES_PER_GAME = (STEPS - LEARNING_STARTS) // STEPS_PER_UPDATE  # 50
TARGET_EVERY = 7  # 50 updates are no multiple of 7: the target is stale when game 1 ends
FAMILIES = {
    "atari": ["pong", "breakout"],
    "minatar": ["minatar:breakout", "minatar:space_invaders"],
}


def tiny_config(games: list[str], modulated: bool, *overrides: str):
    """Two short games with learning in each, a small Fisher in two batches, no periodic files."""
    minatar = games[0].startswith("minatar:")
    architecture = ["network.architecture=minatar"] if minatar else []
    return build_config(
        "configs/smoke.yaml",
        [
            f"run.games=[{', '.join(games)}]",
            f"run.steps_per_game={STEPS}",
            f"agent.learning_starts={LEARNING_STARTS}",
            f"agent.steps_per_update={STEPS_PER_UPDATE}",
            "agent.batch_size=8",
            f"agent.target_update_every={TARGET_EVERY}",
            "agent.learning_rate=1e-3",  # the per-game gains move visibly in 50 updates
            "consolidation.method=ewc",
            f"consolidation.fisher_samples={12 if minatar else 6}",  # the float64 reference is slow on Atari
            f"consolidation.fisher_batch_size={8 if minatar else 4}",  # two batches: the sampler's state carries over
            "consolidation.probe_states=8",
            "run.checkpoint_every=0",
            "run.log_every=100000",
            "run.device=cpu",
            f"network.per_game_modulation={str(modulated).lower()}",
            *architecture,
            *overrides,
        ],
    )


def cloned(value):
    """A deep copy of a state dict (on the CPU `tensor.cpu()` is the tensor itself, not a copy)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: cloned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [cloned(item) for item in value]
    return value


def same_tensors(a, b) -> bool:
    """Whether two nested state dicts hold the same keys and bit-identical tensors."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    return a == b


@dataclass
class Boundary:
    """What `finish_game` was handed, and the learner at that moment."""

    game: str
    replay: FrameReplay
    replay_state: dict
    online: dict
    target_was_online: bool
    optimizer: dict


@dataclass
class FirstUpdate:
    """The learner just before the first update of a game."""

    game: str
    target_is_online: bool
    optimizer: dict


@dataclass
class Recording:
    trainer: SequenceTrainer
    boundaries: list[Boundary] = field(default_factory=list)
    first_updates: list[FirstUpdate] = field(default_factory=list)
    batches: dict[str, list[Transitions]] = field(default_factory=dict)


def record_run(config, run_dir) -> Recording:
    """Run `config` to the end, recording every boundary and every update's batch."""
    trainer = SequenceTrainer(config, run_dir, torch.device("cpu"), MemoryLogger())
    recording = Recording(trainer)
    learner = trainer.learner
    finish_game, update = trainer.finish_game, learner.update

    def recording_finish_game(replay: FrameReplay) -> None:
        recording.boundaries.append(
            Boundary(
                game=trainer.games[trainer.position.game_index],
                replay=replay,
                replay_state=cloned(replay.get_state()),
                online=cloned(learner.online.state_dict()),
                target_was_online=same_tensors(learner.target.state_dict(), learner.online.state_dict()),
                optimizer=cloned(learner.optimizer.state_dict()),
            )
        )
        finish_game(replay)

    def recording_update(source: Transitions | FrameReplay, game: str):
        # Eagerly, an update from the replay is an update on its sample: draw it here to record it.
        batch = source.sample(learner.config.batch_size) if isinstance(source, FrameReplay) else source
        if game not in recording.batches:
            target_is_online = same_tensors(learner.target.state_dict(), learner.online.state_dict())
            recording.first_updates.append(FirstUpdate(game, target_is_online, cloned(learner.optimizer.state_dict())))
        recording.batches.setdefault(game, []).append(Transitions(*(cloned(x) for x in batch)))
        return update(batch, game)

    trainer.finish_game = recording_finish_game
    learner.update = recording_update
    trainer.run()
    return recording


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("minatar", False), id="minatar"),
        pytest.param(("minatar", True), id="minatar-modulated"),
        pytest.param(("atari", True), id="atari-modulated", marks=pytest.mark.slow),
    ],
)
def recorded(request, tmp_path_factory) -> Recording:
    family, modulated = request.param
    config = tiny_config(FAMILIES[family], modulated)
    return record_run(config, tmp_path_factory.mktemp("boundary") / "run")


def independent_fisher(recording: Recording, boundary: Boundary) -> dict[str, torch.Tensor]:
    """The policy Fisher over the states the boundary's replay draws, per sample in float64.

    A copy of the replay is rebuilt from its state before the boundary (another seed: the state must
    bring the sampler back), then drawn as the boundary draws (`fisher_samples` in batches of
    `fisher_batch_size`); the network is rebuilt from the weights at the boundary.
    """
    config = recording.trainer.config
    games = config.run.games
    family = family_of_run(games)
    capacity = replay_capacity(config.agent, config.run.steps_per_game, config.env.num_envs)
    replay = FrameReplay(capacity, config.env.num_envs, seed=987_654, frame_shape=family.frame_shape, history=family.history)
    replay.set_state(boundary.replay_state)
    samples, size = config.consolidation.fisher_samples, config.consolidation.fisher_batch_size
    drawn = [replay.sample(min(size, samples - start)) for start in range(0, samples, size)]
    states = Transitions(*(torch.cat(parts) for parts in zip(*drawn)))
    network = build_network(config.network, games, family).double()
    network.load_state_dict(boundary.online)
    return brute_force(network, None, states, "policy", boundary.game, config.consolidation.policy_temperature)


def test_every_game_is_consolidated_from_its_own_replay_and_weights(recorded):
    """The stored Fisher of each game equals the Fisher recomputed from that game's replay as it
    stood at the boundary, at the boundary's weights and with that game's biases and gains; the
    stored anchor is the boundary's weights."""
    consolidation = recorded.trainer.learner.consolidation
    assert [b.game for b in recorded.boundaries] == recorded.trainer.games
    assert list(consolidation.per_game) == recorded.trainer.games
    for boundary in recorded.boundaries:
        stored = consolidation.per_game[boundary.game]
        expected = independent_fisher(recorded, boundary)
        assert stored["fisher"].keys() == expected.keys()
        for name, fisher in expected.items():
            assert fisher.abs().max() > 0, name
            assert torch.allclose(stored["fisher"][name].double(), fisher, rtol=1e-4, atol=1e-6 * fisher.abs().max()), (
                boundary.game,
                name,
            )
            assert torch.equal(stored["anchor"][name], boundary.online[name]), (boundary.game, name)


def test_per_game_modulation_is_trained_and_enters_the_fisher(recorded):
    """With per-game biases and gains, each game trains its own and the Fisher is taken through
    them: without them the same states give another Fisher (so the test above can tell)."""
    network = recorded.trainer.learner.online
    if not network.modulation:
        pytest.skip("this run has no per-game biases and gains")
    first = recorded.boundaries[0]
    gains = [value for name, value in first.online.items() if name.startswith(f"modulation.{first.game}.gains")]
    assert any(not torch.equal(gain, torch.ones_like(gain)) for gain in gains)  # trained during its game
    replay = FrameReplay(
        first.replay.capacity, first.replay.num_envs, frame_shape=first.replay.frame_shape, history=first.replay.history
    )
    replay.set_state(first.replay_state)
    states = [replay.sample(16)]
    network = build_network(recorded.trainer.config.network, recorded.trainer.games, family_of_run(recorded.trainer.games))
    network.load_state_dict(first.online)
    with_modulation = diagonal_fisher(network, states, first.game)
    without = diagonal_fisher(network, states, None)
    assert any(not torch.allclose(with_modulation[name], without[name], rtol=1e-3) for name in with_modulation)


def test_the_target_is_synced_at_the_first_update_of_every_game(recorded):
    """`start_game` copies the online network into the target; without it game 2 would start with
    a target from the middle of game 1 (50 updates are no multiple of the 7-update sync period)."""
    assert [update.game for update in recorded.first_updates] == recorded.trainer.games
    assert all(update.target_is_online for update in recorded.first_updates)
    assert not recorded.boundaries[0].target_was_online  # so the sync at the boundary is needed


def test_adam_moments_are_kept_across_the_boundary(recorded):
    """agents/dqn.py: "A new game: the target starts from the current network, Adam's moments are kept"."""
    end_of_first, start_of_second = recorded.boundaries[0].optimizer, recorded.first_updates[1].optimizer
    assert len(end_of_first["state"]) >= len(recorded.trainer.learner.online.shared_parameters())
    assert same_tensors(start_of_second, end_of_first)


def test_updates_follow_the_schedule_in_every_game(recorded):
    assert {game: len(batches) for game, batches in recorded.batches.items()} == {
        game: UPDATES_PER_GAME for game in recorded.trainer.games
    }


def frames_of(observations: torch.Tensor, frame_channels: int) -> set[bytes]:
    """Every non-blank frame of a batch of observations (B, L*C, H, W), as bytes."""
    frames = observations.reshape(-1, frame_channels, *observations.shape[2:])
    return {frame.numpy().tobytes() for frame in frames if frame.any()}


def test_the_new_game_samples_none_of_the_old_games_frames(recorded):
    """Game 2's batches come from a fresh replay: no frame stored by game 1 appears in them."""
    family = family_of_run(recorded.trainer.games)
    channels = family.frame_shape[0]
    first = recorded.boundaries[0]
    old_frames = frames_of(first.replay_state["frames"].flatten(0, 1), channels)
    assert len(old_frames) > 50
    second_game = recorded.trainer.games[1]
    new_frames = set()
    for batch in recorded.batches[second_game]:
        new_frames |= frames_of(batch.s_tm1, channels) | frames_of(batch.s_t, channels)
    assert len(new_frames) > 50
    assert not new_frames & old_frames
    first_game_frames = set()
    for batch in recorded.batches[first.game]:
        first_game_frames |= frames_of(batch.s_tm1, channels)
    assert first_game_frames <= old_frames  # the check itself sees a game's own frames
