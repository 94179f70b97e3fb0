"""The agent's sections of a run's config: the network and the Double DQN learner."""

from __future__ import annotations

from dataclasses import dataclass

from agents.cuda_graph import UPDATE_MODES
from agents.network import ARCHITECTURES
from agents.optim import OPTIMIZERS

LOSS_REDUCTIONS = ("mean", "sum")
"""`agent.loss_reduction`: how a minibatch's Huber losses are combined (torch's `reduction`)."""
GRAD_CLIP_SCOPES = ("total", "td")
"""`agent.grad_clip_scope`: which gradient `agent.max_grad_norm` bounds."""
EPSILON_CLOCKS = ("visit", "game")
"""`agent.epsilon_clock`: whose steps the epsilon schedule counts."""


def one_of(key: str, value: str, registry) -> list[str]:
    """The problem line for a name that is not in its registry (empty list when it is)."""
    return [] if value in registry else [f"{key} must be one of {', '.join(registry)}, got {value!r}"]


@dataclass
class NetworkConfig:
    architecture: str = "nature"
    """`nature`: Mnih et al. 2015 (conv 32-64-64, fc 512). `large`: the EWC paper's
    (conv 32-64-128, fc 1024). Every name is in agents/network.py's ARCHITECTURES."""
    per_game_modulation: bool = False
    """Give every layer per-game biases and gains, y = (Wx + b + b_g) * g_g (EWC paper). They
    belong to one game each and are never consolidated."""

    def problems(self) -> list[str]:
        return one_of("network.architecture", self.architecture, ARCHITECTURES)


@dataclass
class AgentConfig:
    """Double DQN learner."""

    optimizer: str = "adam"
    """`adam` (CleanRL/Dopamine habit) or `rmsprop` (Nature DQN / EWC paper: centred, alpha 0.95,
    eps 0.01 inside the square root as in DeepMind's code; see agents/optim.py)."""
    learning_rate: float = 1e-4
    adam_eps: float = 1.5e-4
    gamma: float = 0.99
    batch_size: int = 32
    steps_per_update: int = 4
    """Agent steps per gradient update (replay ratio 8 = batch 32 every 4 steps)."""
    replay_capacity: int = 1_000_000
    """Transitions kept per game (each 84x84 frame is stored once: about 7 GB per million)."""
    learning_starts: int = 80_000
    """Agent steps of each game before its first update; the count restarts at every game."""
    target_update_every: int = 2_000
    """Gradient updates between target-network syncs (2,000 updates = 8,000 agent steps), counted from
    each game's start, where the target is synced too."""
    loss_reduction: str = "mean"
    """How the per-transition Huber losses of a minibatch are combined: `mean` (CleanRL, Dopamine)
    or `sum` (DeepMind's DQN, and so the EWC paper: its gradient is the sum of the clipped TD
    errors' gradients, 32x the mean's at batch 32). Centred RMSProp's eps of 0.01 inside the root
    makes its step nearly proportional to the gradient: only `sum` gives DeepMind's step at
    DeepMind's learning rate. Adam is scale-invariant only where |g| >> `adam_eps`.
    The consolidation term is added to this loss as it is, so the same lambda weighs the penalty
    `batch_size` times more against `mean` TD loss than against `sum` TD loss."""
    max_grad_norm: float = 10.0
    """The gradient is rescaled to at most this L2 norm before the optimizer step."""
    grad_clip_scope: str = "total"
    """Which gradient `max_grad_norm` bounds: `total`, of TD loss + consolidation term (a strong
    penalty cannot take a huge step either), or `td`, of the TD loss alone, the penalty's gradient
    added after the clipping (it is then never shrunk by a large TD gradient)."""
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay_start: int = 0
    """Agent steps into each game at which epsilon starts to fall."""
    epsilon_decay_steps: int = 0
    """Agent steps over which epsilon falls; 0 means `epsilon_decay_fraction` of the game."""
    epsilon_decay_fraction: float = 0.1
    epsilon_clock: str = "visit"
    """Which steps the epsilon schedule counts: `visit`, the steps of the current visit of the game
    (every revisit explores from `epsilon_start` again), or `game`, every step the game has been
    trained over all its visits (the EWC paper's "different timer for each of the tasks")."""
    update_mode: str = "auto"
    """How each gradient update runs: `eager`, op by op; `compiled`, its forward and backward passes
    compiled by torch.compile (agents/compiled.py: needs a C++ compiler, tens of seconds to compile
    once per process); `cuda-graph`, the whole update (sampling the batch from the replay on the
    device, forward, backward, clipping, optimizer step) captured once per game and replayed, which
    replaces a few hundred kernel launches per update by one (CUDA only); `auto`: `cuda-graph` on
    CUDA, checked against the eager update at every capture (a few updates of each from the same
    state, then undone: agents/cuda_graph.py `check_against_eager`) and replaced by `eager` for the
    rest of the run, with a warning, if they differ beyond float32 rounding; `eager` elsewhere (on a
    CPU the compiled update measured at most ~1.2x faster and takes 30 to 80 s to compile: README,
    Performance). All give the same results to float32 rounding."""

    def problems(self) -> list[str]:
        checks = [
            (self.batch_size > 0, "agent.batch_size must be positive"),
            (self.steps_per_update > 0, "agent.steps_per_update must be positive"),
            (self.target_update_every > 0, "agent.target_update_every must be positive"),
            (self.learning_rate > 0, "agent.learning_rate must be positive"),
            (self.max_grad_norm > 0, "agent.max_grad_norm must be positive"),
            (0 <= self.gamma <= 1, "agent.gamma must be in [0, 1]"),
            (
                0 <= self.epsilon_end <= 1 and 0 <= self.epsilon_start <= 1,
                "agent.epsilon_start and agent.epsilon_end must be in [0, 1]",
            ),
        ]
        return (
            one_of("agent.optimizer", self.optimizer, OPTIMIZERS)
            + one_of("agent.loss_reduction", self.loss_reduction, LOSS_REDUCTIONS)
            + one_of("agent.grad_clip_scope", self.grad_clip_scope, GRAD_CLIP_SCOPES)
            + one_of("agent.epsilon_clock", self.epsilon_clock, EPSILON_CLOCKS)
            + one_of("agent.update_mode", self.update_mode, UPDATE_MODES)
            + [message for ok, message in checks if not ok]
        )
