"""A population: P learners (cells) that differ in seed, method and lambda, acting and updating as one
batched computation over a leading cell dimension.

Each cell stays an ordinary DQNLearner: its networks, optimizer, consolidation and checkpoints are the
ones it has alone. What the population adds is where their numbers live. Every parameter name gets one
stacked tensor of shape (P, *shape), and each cell's parameter of that name becomes a view of its row
(`param.data = stacked[p]`), so a cell's own code (its Fisher at a boundary, its evaluation, its
target sync, its checkpoint) reads and writes the population's numbers, and one batched step moves
every cell:

    Q_p(s) for all p at once:   vmap over (stacked parameters, stacked batches) of functional_call
    L = sum_p L_TD,p             backward once: d L / d theta_p = d L_TD,p / d theta_p (cells share nothing)
    g_p += lambda_p A_p (theta_p - mu_p)       each cell's consolidation term (agents/ewc/methods.py), as its
                                               quadratic A, mu, c; zero for a cell without one
    g_p *= min(1, max_norm / (||g_p|| + 1e-6))  clipping per cell: a global norm would couple the cells
    one optimizer step over the stacked tensors: Adam and RMSProp are elementwise, so it is each cell's

The optimizer's state is stacked the same way and each cell's optimizer holds views of its rows, so a
cell's checkpoint is what it would save alone (ewc_training/checkpoint.py `compact` writes a view as
its own tensor). A population of one is its cell: acting and updating go through the cell's own
learner (eager, compiled or CUDA graph), bit for bit the single run.

Numbers: a cell in a population takes the same actions for the same generator state as alone, and its
weights equal the lone run's to float32 rounding (a batched convolution and matmul sum in another
order than separate ones); tests/agents/test_population.py checks both across a game boundary.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from agents.dqn import DQNLearner, UpdateStats, explore, huber_td_loss
from agents.ewc.methods import QuadraticConsolidation
from agents.optim import make_optimizer
from agents.replay import FrameReplay, Transitions


class PopulationError(ValueError):
    """Cells that cannot share one batched computation; the message says which setting differs."""


def stack_rows(tensors: list[torch.Tensor], requires_grad: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One (P, *shape) tensor holding `tensors`, which become views of its rows (same objects, new storage)."""
    stacked = torch.stack([tensor.detach() for tensor in tensors]).requires_grad_(requires_grad)
    rows = stacked.detach()
    for index, tensor in enumerate(tensors):
        tensor.data = rows[index]
    return stacked, tensors


def _check_alike(learners: list[DQNLearner]) -> None:
    """Cells may differ in seed, method and lambda, not in what shapes or schedules the computation."""
    first = learners[0]
    for learner in learners[1:]:
        if learner.config != first.config:
            raise PopulationError(
                "cells of one population need the same agent settings (they may differ in seed, method and lambda)"
            )
        shapes = [tuple(param.shape) for param in learner.online.parameters()]
        if shapes != [tuple(param.shape) for param in first.online.parameters()]:
            raise PopulationError("cells of one population need the same network and games")
        if learner.updates != first.updates or learner.updates_since_sync != first.updates_since_sync:
            raise PopulationError("cells of one population must be at the same point of training")
    if len(learners) > 1 and any(learner.rehearsal is not None for learner in learners):
        raise PopulationError("methods with replay (rehearsal) train one cell per process for now")


class PopulationLearner:
    """P DQNLearners acting and updating as one computation; see the module docstring."""

    def __init__(self, learners: list[DQNLearner]):
        if not learners:
            raise PopulationError("a population needs at least one cell")
        _check_alike(learners)
        self.cells = learners
        self.config = learners[0].config
        if len(learners) == 1:
            return
        self.template = learners[0].online  # its forward, run by functional_call on each cell's parameters
        self.names = [name for name, _ in self.template.named_parameters()]
        self.shared_names = list(self.template.shared_parameters())
        self.online = self._stack([learner.online for learner in learners], requires_grad=True)
        self.target = self._stack([learner.target for learner in learners], requires_grad=False)
        flags = learners[0].optimizer_flags
        self.optimizer = make_optimizer(
            list(self.online.values()), self.config.optimizer, self.config.learning_rate, self.config.adam_eps, **flags
        )
        self._stack_optimizer_state()
        self._penalty_sources: list[object] = []
        self._penalty: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor] | None = None
        self._batched_q = vmap(self._cell_q, in_dims=(0, 0, None))
        self._batched_td = vmap(self._cell_td_loss, in_dims=(0, 0, 0, 0, 0, 0, 0, None))

    @property
    def size(self) -> int:
        return len(self.cells)

    def _stack(self, networks: list[nn.Module], requires_grad: bool) -> dict[str, torch.Tensor]:
        """name -> (P, *shape) tensor; every network's parameter of that name a view of its row."""
        columns = zip(*(list(network.parameters()) for network in networks))
        return {name: stack_rows(list(column), requires_grad)[0] for name, column in zip(self.names, columns)}

    def _cell_params(self, index: int) -> list[nn.Parameter]:
        return list(self.cells[index].online.parameters())

    def _stack_optimizer_state(self) -> None:
        """Resumed cells bring optimizer state: stack it (a cell's moments are its row) and share it back."""
        for name, stacked in self.online.items():
            position = self.names.index(name)
            states = [learner.optimizer.state.get(self._cell_params(index)[position]) for index, learner in enumerate(self.cells)]
            if all(not state for state in states):
                continue
            if any(not state for state in states):
                raise PopulationError(
                    f"cells of one population must be at the same point of training ({name} has moments in some only)"
                )
            merged = {}
            for key, value in states[0].items():
                if torch.is_tensor(value) and value.shape == stacked.shape[1:] and value.dim() > 0:
                    merged[key] = torch.stack([state[key] for state in states])
                elif all(_same(state[key], value) for state in states):
                    merged[key] = value
                else:
                    raise PopulationError(
                        f"cells of one population must be at the same point of training (optimizer {key} differs)"
                    )
            self.optimizer.state[stacked] = merged
        self._shared_state: set[str] = set()
        self._share_optimizer_state()

    def _share_optimizer_state(self) -> None:
        """Give each cell's optimizer views of its rows of any optimizer state the last step created."""
        if len(self._shared_state) == len(self.optimizer.state):
            return
        for position, (name, stacked) in enumerate(self.online.items()):
            state = self.optimizer.state.get(stacked)
            if not state or name in self._shared_state:
                continue
            for index, learner in enumerate(self.cells):
                rows = {key: value[index] if _per_element(value, stacked) else value for key, value in state.items()}
                learner.optimizer.state[self._cell_params(index)[position]] = rows
            self._shared_state.add(name)

    @torch.no_grad()
    def act(
        self, observations: list[torch.Tensor], game: str, epsilon: float, generators: list[torch.Generator]
    ) -> list[torch.Tensor]:
        """Each cell's epsilon-greedy actions for its observations, drawn from its own generator."""
        if self.size == 1:
            return [self.cells[0].act(observations[0], game, epsilon, generators[0])]
        num_actions = self.template.num_actions
        return [
            explore(row, num_actions, epsilon, generator) for row, generator in zip(self.greedy(observations, game), generators)
        ]

    @torch.no_grad()
    def greedy(self, observations: list[torch.Tensor], game: str, cells: list[int] | None = None) -> list[torch.Tensor]:
        """argmax_a Q(s, a) of each cell for its observations; `cells` (default all) says whose they are.
        All cells: one batched forward pass; one cell or a few: each cell's own network."""
        cells = list(range(self.size)) if cells is None else cells
        if self.size == 1 or len(cells) < self.size:
            return [self.cells[index].online(obs, game).argmax(dim=1) for index, obs in zip(cells, observations)]
        return list(self._batched_q(self.online, torch.stack(observations), game).argmax(dim=-1))

    def update(self, replays: list[FrameReplay], game: str) -> list[UpdateStats]:
        """One update of every cell, each on a batch from its own replay (DQNLearner.update's, batched)."""
        if self.size == 1:
            return [self.cells[0].update(replays[0], game)]
        for learner in self.cells:
            learner.consolidation.train_on(game)
        batches = [replay.sample(self.config.batch_size) for replay in replays]
        batch = Transitions(*(torch.stack(field) for field in zip(*batches)))
        stats = self._step(batch, game)
        for learner in self.cells:
            learner.updates += 1
            learner.updates_since_sync += 1
            if learner.updates_since_sync >= self.config.target_update_every:
                learner.sync_target()  # copies into its rows of the stacked target
        return [UpdateStats(row) for row in stats]

    def _cell_q(self, params: dict[str, torch.Tensor], observations: torch.Tensor, game: str) -> torch.Tensor:
        return functional_call(self.template, params, (observations, game))

    def _cell_td_loss(self, online, target, s_tm1, a_tm1, r_t, discount_t, s_t, game):
        """One cell's `huber_td_loss`, run for every cell at once under vmap."""

        def q_online(frames, game):
            return functional_call(self.template, online, (frames, game))

        def q_target(frames, game):
            return functional_call(self.template, target, (frames, game))

        batch = Transitions(s_tm1, a_tm1, r_t, discount_t, s_t)
        return huber_td_loss(q_online, q_target, batch, game, self.config.gamma, self.config.loss_reduction)

    def _step(self, batch: Transitions, game: str) -> torch.Tensor:
        """TD losses, backward, consolidation gradients, per-cell clipping, one optimizer step: (P, 3) stats."""
        modulated = game if game in self.template.modulation else None
        td_loss, q_taken = self._batched_td(self.online, self.target, *batch, modulated)
        for stacked in self.online.values():
            stacked.grad = None
        td_loss.sum().backward()
        penalty, penalty_gradients = self._penalties()
        if self.config.grad_clip_scope == "total":  # clip(grad(L_TD + P)), as DQNLearner.backward_clipped
            self._add_gradients(penalty_gradients)
            self._clip_per_cell()
        else:  # clip(grad L_TD) + grad P
            self._clip_per_cell()
            self._add_gradients(penalty_gradients)
        self.optimizer.step()
        self._share_optimizer_state()
        return torch.stack((td_loss.detach(), penalty.to(td_loss.dtype), q_taken.detach().mean(dim=1)), dim=1)

    def _penalties(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every cell's consolidation term (lambda_p/2) [sum_i A_p,i (theta_p,i - mu_p,i)^2 + c_p], (P,),
        and its gradient lambda_p A_p (theta_p - mu_p) per shared tensor (zero for a cell without one).

        The gradient is computed as WeightedSquares' backward computes it for a lone cell,
        (A (theta - mu)) * lambda in float32, so a cell's step has this term to the last bit.
        """
        precision, anchor, offset, strength = self._penalty_terms()
        cells = len(self.cells)
        squares, gradients = torch.zeros(cells, device=offset.device), {}
        if not precision:  # no cell has a term yet (fine-tuning, or every cell still in its first game)
            return squares, gradients
        for name in self.shared_names:
            difference = self.online[name].detach() - anchor[name]
            weighted = difference * precision[name]
            squares += (difference * weighted).reshape(cells, -1).sum(dim=1)
            gradients[name] = weighted * _per_cell(strength, weighted)
        return (0.5 * strength) * (squares + offset), gradients

    def _add_gradients(self, gradients: dict[str, torch.Tensor]) -> None:
        for name, gradient in gradients.items():
            stacked = self.online[name]
            stacked.grad = gradient if stacked.grad is None else stacked.grad + gradient

    def _penalty_terms(self):
        """Each cell's quadratic stacked (A, mu per shared name; c and lambda per cell), rebuilt only when
        a cell's consolidation has new terms (a boundary, or a revisit that leaves its own term out)."""
        sources = [getattr(learner.consolidation, "precision", None) for learner in self.cells]
        if self._penalty is None or any(a is not b for a, b in zip(sources, self._penalty_sources)):
            self._penalty_sources = sources
            self._penalty = self._stack_penalties()
        return self._penalty

    def _stack_penalties(self):
        precision, anchor = {}, {}
        for name in self.shared_names if any(_has_terms(learner) for learner in self.cells) else ():
            rows = self.online[name].detach()
            terms = [_quadratic(learner.consolidation, name) for learner in self.cells]
            precision[name] = torch.stack([a if a is not None else torch.zeros_like(row) for (a, _), row in zip(terms, rows)])
            anchor[name] = torch.stack([m if m is not None else torch.zeros_like(row) for (_, m), row in zip(terms, rows)])
        device = self.online[self.shared_names[0]].device
        offsets = [getattr(learner.consolidation, "offset", 0.0) if _has_terms(learner) else 0.0 for learner in self.cells]
        strengths = [
            2 * float(torch.tensor(0.5 * learner.consolidation.strength)) if _has_terms(learner) else 0.0
            for learner in self.cells
        ]
        return precision, anchor, torch.tensor(offsets, device=device), torch.tensor(strengths, device=device)

    def _clip_per_cell(self) -> None:
        """clip_grad_norm_ per cell: g_p *= min(1, max_norm / (||g_p||_2 + 1e-6)) over that cell's tensors
        with a gradient (another game's biases and gains have none, as alone)."""
        cells = len(self.cells)
        grads = [stacked.grad for stacked in self.online.values() if stacked.grad is not None]
        norms = torch.stack([grad.reshape(cells, -1).norm(dim=1) for grad in grads], dim=1).norm(dim=1)
        scale = (self.config.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(_per_cell(scale, grad))


def _per_cell(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(P,) values shaped to broadcast over a (P, ...) tensor."""
    return values.view((len(values),) + (1,) * (like.dim() - 1))


def _has_terms(learner: DQNLearner) -> bool:
    return isinstance(learner.consolidation, QuadraticConsolidation) and bool(learner.consolidation.precision)


def _quadratic(consolidation, name: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(A, mu) of one shared tensor, or (None, None) for a cell with no consolidation term yet."""
    if isinstance(consolidation, QuadraticConsolidation) and consolidation.precision:
        return consolidation.precision[name], consolidation.anchor[name]
    return None, None


def _per_element(value: object, stacked: torch.Tensor) -> bool:
    return torch.is_tensor(value) and value.dim() > 0 and value.shape == stacked.shape


def _same(a: object, b: object) -> bool:
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
    return a == b
