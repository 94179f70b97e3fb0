"""Double DQN: targets, loss, one gradient update, epsilon-greedy acting and the epsilon schedule.

The learner adds whatever its consolidation (agents/ewc/methods.py) asks for to the TD loss and
knows nothing else about it: EWC, online EWC, L2 and plain fine-tuning differ only there.
"""

from __future__ import annotations

import copy
import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from agents.compiled import compile_function
from agents.config import AgentConfig
from agents.cuda_graph import GraphedStep, check_against_eager, resolve_update_mode
from agents.ewc.methods import Consolidation
from agents.network import QNetwork
from agents.optim import make_optimizer
from agents.rehearsal import Rehearsal
from agents.replay import FrameReplay, Transitions


def epsilon_at(step_in_game: int, config: AgentConfig, steps_per_game: int) -> float:
    """Linear epsilon from `epsilon_start` to `epsilon_end`, restarting at every game.

    It stays at the start value for `epsilon_decay_start` steps of the game, then falls over
    `epsilon_decay_steps` steps (or `epsilon_decay_fraction` of the game when that is 0).
    """
    decay_steps = config.epsilon_decay_steps or max(1, int(config.epsilon_decay_fraction * steps_per_game))
    progress = min(1.0, max(0.0, (step_in_game - config.epsilon_decay_start) / decay_steps))
    return config.epsilon_start + progress * (config.epsilon_end - config.epsilon_start)


def double_dqn_targets(
    q_online_next: torch.Tensor,
    q_target_next: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """y = r + gamma * discount * Q_target(s', argmax_a Q_online(s', a))  (van Hasselt et al. 2016).

    The online network picks the action and the target network values it, which removes most of
    DQN's overestimation. `discount_t` is 0 after a termination, 1 after a time-limit truncation.
    """
    best_next = q_online_next.argmax(dim=1, keepdim=True)
    return r_t + gamma * discount_t * q_target_next.gather(1, best_next).squeeze(1)


QFunction = Callable[[torch.Tensor, str | None], torch.Tensor]
"""(observations, game) -> Q-values: a QNetwork, or one cell's network in a population (functional_call)."""


def huber_td_loss(
    online: QFunction, target: QFunction, batch: Transitions, game: str | None, gamma: float, reduction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Huber loss between Q(s, a) and the Double DQN target (mean or sum over the batch, `reduction`),
    and Q(s, a). Huber with delta 1 is DQN's "TD error clipped to [-1, 1]": its gradient is
    clip(Q(s, a) - y, -1, 1) times that of Q(s, a). The one TD loss of the suite: a single learner
    calls it with its networks, a population (agents/population.py) once per cell under vmap."""
    q_taken = online(batch.s_tm1, game).gather(1, batch.a_tm1.unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        targets = double_dqn_targets(online(batch.s_t, game), target(batch.s_t, game), batch.r_t, batch.discount_t, gamma)
    return F.smooth_l1_loss(q_taken, targets, reduction=reduction), q_taken


@torch.no_grad()
def epsilon_greedy(
    network: QNetwork,
    observations: torch.Tensor,
    game: str | None,
    epsilon: float | torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Epsilon-greedy actions for a batch of observations, chosen on the network's device.

    Each observation independently gets a uniformly random action with probability epsilon and
    argmax_a Q(s, a) otherwise. Training and evaluation both act through this function. `epsilon`
    may be a float32 scalar tensor on the device (a captured graph reads it in place); the
    comparison u < epsilon is made in float32 either way, so both give the same actions.
    """
    return explore(network(observations, game).argmax(dim=1), network.num_actions, epsilon, generator)


def explore(greedy: torch.Tensor, num_actions: int, epsilon: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each greedy action replaced by a uniformly random one with probability epsilon; the draws come
    from `generator` alone, so a population's cell (agents/population.py) acts as it would alone."""
    n = greedy.shape[0]
    explores = torch.rand(n, device=greedy.device, generator=generator) < epsilon
    random = torch.randint(num_actions, (n,), device=greedy.device, generator=generator)
    return torch.where(explores, random, greedy)


@dataclass
class UpdateStats:
    """One update's statistics as one device tensor (td_loss, consolidation, q_mean); read them (a GPU
    sync) only when logging. One tensor, not three: copying it out of a graph and summing it are then
    one kernel each per update, where launches, not arithmetic, bound a GPU update."""

    values: torch.Tensor
    NAMES = ("td_loss", "consolidation", "q_mean")

    @classmethod
    def of(cls, td_loss: torch.Tensor, consolidation: torch.Tensor, q_mean: torch.Tensor) -> UpdateStats:
        return cls(torch.stack((td_loss, consolidation.to(td_loss.dtype), q_mean)))

    @property
    def td_loss(self) -> torch.Tensor:
        return self.values[0]

    @property
    def consolidation(self) -> torch.Tensor:
        return self.values[1]

    @property
    def q_mean(self) -> torch.Tensor:
        return self.values[2]


def optimizer_flags(config: AgentConfig, device: torch.device) -> dict[str, bool]:
    """How the optimizer's step runs (never what it computes).

    `capturable` keeps the step counter on the GPU, so that the step can run inside a CUDA graph.
    Every update mode on CUDA uses it, so that eager and captured updates do the same arithmetic:
    capturable Adam computes its bias corrections in float32 on the GPU, where 1 - 0.999^t is off by
    ~1.3e-5 of itself (0.999's float32 rounding error times 1/(1 - 0.999)), the default Adam in
    float64 on the host; every step of one then differs from the other's by up to ~1e-5 of a step,
    a seed that a single ReLU flipped by it can grow into a whole step of some weights.
    Adam on CUDA is also `fused`: one kernel for every parameter instead of a dozen multi-tensor ops,
    a step that is both capturable (it keeps its counter on the GPU) and cheap to launch eagerly.
    On a CPU, Adam's `fused` kernel is about 8x faster than its default loop over tensors (0.9 ms
    instead of 7.5 ms per step for the Nature CNN) and agrees with it to float rounding.
    """
    if device.type == "cuda":
        return {"capturable": True, "fused": True} if config.optimizer == "adam" else {"capturable": True}
    if device.type == "cpu" and config.optimizer == "adam":
        return {"fused": True}
    return {}


def set_optimizer_flags(optimizer: torch.optim.Optimizer, flags: dict[str, bool]) -> None:
    """Make a loaded optimizer state run as this learner runs it, whatever device or mode saved it.

    `load_state_dict` keeps the saving run's `capturable`/`fused` choice, which may not work here (a
    capturable step fails on a CPU); those keep each `step` counter on its parameter's device, the
    default implementation on the host.
    """
    for group in optimizer.param_groups:
        group["capturable"] = flags.get("capturable", False)
        if "fused" in group:
            group["fused"] = flags.get("fused")
        on_device = group["capturable"] or group.get("fused")
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(param.device if on_device else "cpu", torch.float32)


class DQNLearner:
    """Online and target networks, the optimizer and the update rule; with a `rehearsal`, batches drawn
    from a replay also hold transitions of earlier games (agents/rehearsal.py)."""

    def __init__(self, network: QNetwork, config: AgentConfig, consolidation: Consolidation, rehearsal: Rehearsal | None = None):
        self.online = network
        self.target = copy.deepcopy(network).requires_grad_(False)
        self.config = config
        self.consolidation = consolidation
        self.rehearsal = rehearsal
        device = network.layers[0].weight.device
        self.update_mode = resolve_update_mode(config.update_mode, device)
        self.optimizer_flags = optimizer_flags(config, device)
        self.optimizer = make_optimizer(
            network.parameters(), config.optimizer, config.learning_rate, config.adam_eps, **self.optimizer_flags
        )
        self.updates = 0
        self.updates_since_sync = 0  # the target's age in updates; every game starts at 0 (start_game syncs)
        self._loss_terms = compile_function(self.loss_terms) if self.update_mode == "compiled" else self.loss_terms
        self._graph: GraphedStep | None = None  # captured for `_graph_for`; dropped by start_game()
        self._graph_for: tuple[str, weakref.ref | None] | None = None  # (game, its replay if it samples one)
        self.checks_graph = config.update_mode == "auto"  # a graph it picked itself is checked against eager
        self._actor: GraphedStep | None = None  # captured acting in cuda-graph mode, for `_actor_for`
        self._actor_for: tuple[object, ...] | None = None  # (game, batch shape, dtype, generator)
        self._epsilon: torch.Tensor | None = None  # the actor's epsilon, on the device, filled before each replay

    def td_loss(self, batch: Transitions, game: str, reduction: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`huber_td_loss` of this learner's networks (`reduction` by default `loss_reduction`)."""
        return huber_td_loss(self.online, self.target, batch, game, self.config.gamma, reduction or self.config.loss_reduction)

    def loss_terms(self, game: str | None, *batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TD loss, consolidation term and Q(s, a): the forward pass that `compiled` mode compiles."""
        td_loss, q_taken = self.td_loss(Transitions(*batch), game)
        return td_loss, self.consolidation.penalty(self.online), q_taken

    def gradient_step(self, game: str, *batch: torch.Tensor) -> tuple[torch.Tensor]:
        """TD loss + consolidation term, backward, clipping, optimizer step: what a CUDA graph captures.

        Returns UpdateStats' one device tensor (td_loss, consolidation, q_mean).
        """
        # A game without its own biases and gains runs the network as any other: passing None then
        # lets compiled code serve every such game without tracing it again.
        td_loss, penalty, q_taken = self._loss_terms(game if game in self.online.modulation else None, *batch)
        return self.descend(td_loss, penalty, q_taken)

    def mixed_gradient_step(self, parts: list[tuple[str, Transitions]]) -> tuple[torch.Tensor]:
        """`gradient_step` on a batch whose parts belong to different games, each under its own game's
        biases and gains: L_TD = (1/B) sum_parts sum_part Huber (or the plain sum with
        `loss_reduction: sum`), B the whole batch. Eager in `compiled` mode (each part is its own graph)."""
        sums, q_values = zip(*(self.td_loss(batch, game, reduction="sum") for game, batch in parts))
        td_loss = torch.stack(sums).sum()
        if self.config.loss_reduction == "mean":
            td_loss = td_loss / sum(len(batch.a_tm1) for _, batch in parts)
        return self.descend(td_loss, self.consolidation.penalty(self.online), torch.cat(q_values))

    def descend(self, td_loss: torch.Tensor, penalty: torch.Tensor, q_taken: torch.Tensor) -> tuple[torch.Tensor]:
        """Backward, clipping and the optimizer's step on td_loss + penalty; UpdateStats' one tensor."""
        self.optimizer.zero_grad(set_to_none=True)
        self.backward_clipped(td_loss, penalty)
        self.optimizer.step()
        return (UpdateStats.of(td_loss.detach(), penalty.detach(), q_taken.detach().mean()).values,)

    def backward_clipped(self, td_loss: torch.Tensor, penalty: torch.Tensor) -> None:
        """Gradients of td_loss + penalty, with `max_grad_norm` applied where `grad_clip_scope` says:

            total:  g = clip(grad(L_TD + P))
            td:     g = clip(grad L_TD) + grad P
        where clip(v) = v * min(1, max_grad_norm / ||v||_2) over every parameter together.
        """
        if self.config.grad_clip_scope == "td":
            td_loss.backward()
            nn.utils.clip_grad_norm_(self.online.parameters(), self.config.max_grad_norm)
            if penalty.requires_grad:  # fine-tuning, and any method before its first game ends, has none
                penalty.backward()
            return
        (td_loss + penalty).backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.config.max_grad_norm)

    def sampled_step(self, game: str, replay: FrameReplay) -> tuple[torch.Tensor]:
        """A batch drawn from `replay` on its device, then `gradient_step`: the whole update, as a CUDA graph
        captures it (no batch is copied in: the graph samples the replay as it is at each replay).

        With a rehearsal holding other games, part of the batch comes from their memories: one batch
        when the network has no per-game parameters (every game runs the same network), otherwise
        `mixed_gradient_step` runs each game's part under its own.
        """
        split = self.rehearsal.split(game, self.config.batch_size) if self.rehearsal is not None else []
        if not split:
            return self.gradient_step(game, *replay.sample(self.config.batch_size))
        (_, new), *rehearsed = split
        parts = [(game, replay.sample(new))] + [(other, self.rehearsal.sample(other, count)) for other, count in rehearsed]
        if not self.online.modulation:
            return self.gradient_step(game, *(torch.cat(tensors) for tensors in zip(*(batch for _, batch in parts))))
        return self.mixed_gradient_step(parts)

    def update(self, source: Transitions | FrameReplay, game: str) -> UpdateStats:
        """One gradient step on a batch, or on a batch drawn from a replay (eager or a replayed CUDA graph);
        syncs the target when due. Eager, `update(replay)` is `update(replay.sample(batch_size))`."""
        self.consolidation.train_on(game)  # before a capture: the terms in force may depend on the game
        if isinstance(source, FrameReplay):
            step, inputs = functools.partial(self.sampled_step, game, source), ()
            generators = (source.generator,) + ((self.rehearsal.generator,) if self.rehearsal is not None else ())
        else:
            step, inputs, generators = functools.partial(self.gradient_step, game), tuple(source), ()
        if self.update_mode == "cuda-graph" and not self._graph_serves(source, game):
            self._capture(step, inputs, generators, source, game)
        stats = self._graph(*inputs) if self.update_mode == "cuda-graph" else step(*inputs)
        self.updates += 1
        self.updates_since_sync += 1
        if self.updates_since_sync >= self.config.target_update_every:
            self.sync_target()  # copies into the target's weights in place: a captured graph stays valid
        return UpdateStats(stats[0])

    def _graph_serves(self, source: Transitions | FrameReplay, game: str) -> bool:
        """Whether the captured step is `game`'s, for batches passed in or for this very replay."""
        if self._graph is None or self._graph_for is None:
            return False
        captured_game, replay = self._graph_for
        sampled = isinstance(source, FrameReplay)
        return captured_game == game and (replay() is source if replay is not None else not sampled)

    def _capture(self, step, inputs: tuple[torch.Tensor, ...], generators, source, game: str) -> None:
        """Capture `step`. Under `auto`, first check the graph against the eager step from the same state
        (agents/cuda_graph.py `check_against_eager`); if they differ, warn and update eagerly from then on.

        The replay is held by a weak reference: a finished game's buffer is freed when the trainer
        drops it, not kept alive by a graph that will never run again.
        """
        self._graph = GraphedStep(step, inputs, self.online, self.optimizer, generators)
        self._graph_for = (game, weakref.ref(source) if isinstance(source, FrameReplay) else None)
        if self.checks_graph:
            check = check_against_eager(
                lambda: step(*inputs), lambda: self._graph(*inputs), self.online, self.optimizer, generators
            )
            if not check.agree:
                self.update_mode, self._graph, self._actor = "eager", None, None

    def sync_target(self) -> None:
        """target <- online, at every game's start and every `target_update_every` updates after it.

        The period is counted from the last sync, not over the whole run: a game's first periodic sync
        comes `target_update_every` updates into it, never early because of the updates of earlier games.
        """
        self.target.load_state_dict(self.online.state_dict())
        self.updates_since_sync = 0

    def act(self, observations: torch.Tensor, game: str, epsilon: float, generator: torch.Generator) -> torch.Tensor:
        """Epsilon-greedy actions of the online network (see `epsilon_greedy`); in `cuda-graph` mode from
        a captured graph (one replay instead of a dozen launches), with the same actions as eager."""
        if self.update_mode != "cuda-graph":
            return epsilon_greedy(self.online, observations, game, epsilon, generator)
        key = (game, tuple(observations.shape), observations.dtype, generator)
        if self._actor is None or self._actor_for != key:
            self._capture_actor(observations, game, generator)
            self._actor_for = key
        self._epsilon.fill_(epsilon)
        return self._actor(observations, self._epsilon)[0]

    def _capture_actor(self, observations: torch.Tensor, game: str, generator: torch.Generator) -> None:
        """Capture epsilon-greedy acting for `game` on batches shaped like `observations`.

        The network's weights change in place with every update and the graph reads them in place;
        `generator` is registered with the graph, so replays draw what eager acting would draw.
        """
        self._epsilon = torch.ones((), device=observations.device)
        act = functools.partial(self._act_eagerly, game, generator)
        self._actor = GraphedStep(act, (observations, self._epsilon), self.online, None, (generator,))

    def _act_eagerly(self, game: str, generator: torch.Generator, observations: torch.Tensor, epsilon: torch.Tensor):
        return (epsilon_greedy(self.online, observations, game, epsilon, generator),)

    def start_game(self) -> None:
        """A new game: the target starts from the current network (its sync period restarts), Adam's
        moments are kept.

        A captured update is dropped: the consolidation term may hold new tensors since the last game.
        """
        self.sync_target()
        self._graph = self._actor = None

    def get_state(self) -> dict[str, object]:
        """Everything but the rehearsal's memories, which are saved once per game (ewc_training/schema.py)."""
        state = {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "updates_since_sync": self.updates_since_sync,
        }
        if self.rehearsal is not None:
            state["rehearsal_generator"] = self.rehearsal.generator.get_state()
        return state

    def set_state(self, state: dict[str, object]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_optimizer_flags(self.optimizer, self.optimizer_flags)
        self.updates = int(state["updates"])
        # A checkpoint from before the count restarted at every game synced at multiples of `updates`.
        self.updates_since_sync = int(state.get("updates_since_sync", self.updates % self.config.target_update_every))
        if self.rehearsal is not None and "rehearsal_generator" in state:  # absent when branched from a run without one
            self.rehearsal.generator.set_state(state["rehearsal_generator"].cpu())
        self._graph = self._actor = None  # the optimizer state tensors were replaced
