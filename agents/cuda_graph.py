"""A training step captured once as a CUDA graph and replayed for every later batch.

Why: one Double DQN update of the Nature CNN at batch 32 launches a few hundred small kernels
(three forward passes, a backward pass, gradient clipping, Adam). On a GPU, launching them one by
one from Python takes longer than running them, so an eager learner leaves the GPU mostly idle.
Replaying a captured graph launches all of them at once. Acting (one forward pass for every
emulator, then epsilon-greedy) is captured the same way, without an optimizer.

A graph replays the exact kernels it recorded on the exact memory it recorded them on, so:
- it reads its inputs from fixed tensors and writes its outputs to fixed tensors (each call copies
  them out, or the next call would overwrite them). Its inputs are either a batch (each call copies
  it in) or none at all: a step that samples its own batch from the replay on the device
  (agents/replay.py `sample_indices`) reads the buffer and its bounds in place and draws from the
  replay's generator, registered with the graph so that every replay draws the next numbers, as an
  eager step would;
- every tensor the step reads (weights, optimizer state, the consolidation's Fisher and anchor)
  must keep its storage; in-place updates are fine (a target-network sync copies into the target's
  weights), new tensors are not, so the owner recaptures when they are replaced;
- the step must not create state lazily inside the graph (Adam creates its moments at its first
  step): a few warm-up steps run first, then the weights, optimizer state and generators are put
  back, so the warm-up leaves no trace and the results equal an eager run's;
- the optimizer must be built with `capturable=True` (its step counter then lives on the GPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from agents.compiled import compiler_available

Step = Callable[..., Sequence[torch.Tensor]]

UPDATE_MODES = {
    "eager": "each update runs op by op",
    "compiled": "the update's forward and backward passes compiled by torch.compile (agents/compiled.py)",
    "cuda-graph": "the whole update captured once per game and replayed (CUDA only)",
    "auto": "cuda-graph on CUDA, eager elsewhere (what measured fastest on a CPU, compile time counted)",
}
"""`agent.update_mode` -> what it does."""


def resolve_update_mode(mode: str, device: torch.device) -> str:
    """The mode an update runs in on `device` (see AgentConfig.update_mode).

    `auto` is `cuda-graph` on CUDA. On a CPU it is `eager`: the compiled update measured at most
    ~1.2x faster per update there, and its compile (30 to 80 s) costs more than that saves in a
    MinAtar or smoke run (docs/performance.md); `compiled` is there to ask for.
    """
    if mode not in UPDATE_MODES:
        raise ValueError(f"unknown agent.update_mode {mode!r}; choose one of {', '.join(UPDATE_MODES)}")
    if mode == "auto":
        return "cuda-graph" if device.type == "cuda" else "eager"
    if mode == "cuda-graph" and device.type != "cuda":
        raise ValueError(f"agent.update_mode=cuda-graph needs a CUDA device, not {device.type}")
    if mode == "compiled" and device.type == "cpu" and not compiler_available():
        raise ValueError("agent.update_mode=compiled needs a C++ compiler (g++ or $CXX) for torch.compile; use auto or eager")
    return mode


WARMUP_STEPS = 3
"""Eager steps before capture (PyTorch's documented recipe): they create cuBLAS/cuDNN workspaces and
the optimizer's state outside the graph."""


class TrainingSnapshot:
    """Copies of a module's weights, an optimizer's state and generators' states, to undo steps exactly.

    Restoring copies values back into the same tensors (the graph keeps pointing at them). Optimizer
    state that did not exist at the snapshot is zeroed, which is how Adam and RMSprop initialise it.
    The generators are those the steps draw from (a replay's, when the step samples its own batch).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        generators: Sequence[torch.Generator] = (),
    ):
        self.module, self.optimizer = module, optimizer
        self.weights = [p.detach().clone() for p in module.parameters()]
        self.state = {
            param: {key: value.clone() for key, value in state.items() if torch.is_tensor(value)}
            for param, state in (optimizer.state.items() if optimizer is not None else ())
        }
        self.generators = [(generator, generator.get_state()) for generator in generators]

    @torch.no_grad()
    def restore(self) -> None:
        for param, saved in zip(self.module.parameters(), self.weights):
            param.copy_(saved)
        for param, state in self.optimizer.state.items() if self.optimizer is not None else ():
            saved = self.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and key in saved:
                    value.copy_(saved[key])
                elif torch.is_tensor(value):
                    value.zero_()
        for generator, state in self.generators:
            generator.set_state(state)


class GraphedStep:
    """`step(*inputs)` captured as a CUDA graph; calling it copies inputs in and outputs out.

    `generators` are the ones the step draws from besides torch's default (which graphs always
    follow): each is registered with the graph, so a replay advances it as the eager step would.
    A step that changes no weights (acting) passes no optimizer.
    """

    def __init__(
        self,
        step: Step,
        example_inputs: Sequence[torch.Tensor],
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        generators: Sequence[torch.Generator] = (),
    ):
        self.inputs = [tensor.clone() for tensor in example_inputs]
        snapshot = TrainingSnapshot(module, optimizer, generators)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                step(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        snapshot.restore()
        self.graph = torch.cuda.CUDAGraph()
        for generator in generators:
            self.graph.register_generator_state(generator)
        with torch.cuda.graph(self.graph):
            self.outputs = list(step(*self.inputs))

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        for fixed, value in zip(self.inputs, inputs, strict=True):
            fixed.copy_(value, non_blocking=True)
        self.graph.replay()
        return [output.clone() for output in self.outputs]


CHECK_STEPS = 3
"""Updates each mode runs from one state when `auto` checks a new capture against the eager update."""

STEP_TOLERANCE = 0.05
"""Share of one update step two modes of the same update may differ by, per update (see `check_against_eager`)."""

STATE_TOLERANCE = 0.1
"""Share of the optimizer state's change over the check that two modes may differ by (see `check_against_eager`)."""


@dataclass
class ModeCheck:
    """How far a faster update mode ended from the eager update, from the same state and batches."""

    agree: bool
    difference: float
    """Largest |theta_candidate - theta_eager| over every weight."""
    step: float
    """Largest change of any weight in one eager update."""
    ratio: float
    """Largest difference / bound over every weight: the weights agree when it is at most 1."""
    state_ratio: float = 0.0
    """Largest ||state_candidate - state_eager|| / (STATE_TOLERANCE ||state_eager - state_start||) over the
    optimizer's state tensors: the optimizer states agree when it is at most 1."""


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [param.detach().clone() for param in module.parameters()]


def _optimizer_state(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor of the optimizer's state (moments, step counters), in a fixed order, as float64 copies."""
    return [
        state[key].detach().double().clone()
        for state in optimizer.state.values()
        for key in sorted(state)
        if torch.is_tensor(state[key])
    ]


def _state_ratio(start: list[torch.Tensor], eager: list[torch.Tensor], candidate: list[torch.Tensor]) -> float:
    """Largest ||candidate - eager|| / (STATE_TOLERANCE ||eager - start||) over the state tensors (0/0 = 0)."""
    if len(candidate) != len(eager):
        return float("inf")
    ratios = []
    for s, e, c in zip(start, eager, candidate):
        apart, moved = float(torch.linalg.vector_norm(c - e)), float(torch.linalg.vector_norm(e - s))
        ratios.append(0.0 if apart == 0 else apart / (STATE_TOLERANCE * moved) if moved > 0 else float("inf"))
    return max(ratios, default=0.0)


def check_against_eager(
    eager: Callable[[], object],
    candidate: Callable[[], object],
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: Sequence[torch.Generator] = (),
    steps: int = CHECK_STEPS,
    name: str = "cuda-graph",
) -> ModeCheck:
    """Run `steps` updates of `eager`, put the state back, run as many of `candidate`, compare the weights
    and the optimizer's state, put everything back again (weights, optimizer state, `generators`); warn
    in one line when they differ.

    The weights agree when every weight theta of every parameter tensor p satisfies
        |theta_candidate - theta_eager| <= steps * (STEP_TOLERANCE * s_p + 2^-23 |theta_eager|),
    s_p the largest change of an element of p in one eager update. Why this bound, in float32:
    - from equal weights and batch, the two modes run the same arithmetic, at most with kernels that
      add the terms of a sum in another order (a graph may get other cuBLAS/cuDNN algorithms; some
      are not deterministic): a gradient summed over n ~ 10^4 terms (batch x conv positions) then
      differs by about sqrt(n) 2^-24 ~ 1e-5 of itself. An Adam or RMSProp step is no more sensitive
      to a relative error of its gradient than the gradient is (Adam's m / sqrt(v) is scale-free),
      so one step differs by ~1e-5 of a step;
    - but a pre-activation within that rounding of 0 is then a ReLU that fires in one mode only, and
      that changes the gradient of the weights around the unit by that one sample's share of it:
      typically about 1/B of it (B = 32: 3%), more for a weight few samples reach, so a few weights
      can move up to a whole step apart. This is no bound, only what is usual: measured on an H200
      (Nature CNN, batch 32), graph and eager ended 3.2e-3 of a step apart after 3 updates (2.5e-7,
      one step up to 9.8e-5), three times what 1e-3 of a step per update allowed and 1/47 of what
      STEP_TOLERANCE = 0.05 allows. A disagreement beyond it only makes the run fall back to the
      eager update: slower, never wrong;
    - each mode rounds theta - step to float32: 2^-24 |theta| each, 2^-23 |theta| between them;
    - a wrong captured step (a step missed or taken twice, another batch, another game's
      parameters, the wrong step size) is off by about a whole step: ratio ~ 1 / (steps * STEP_TOLERANCE),
      about 7 with 3 updates (measured on a CPU: 6 to 39).
    A step whose optimizer state is stale (read, or written, where the live state is not) can move the
    weights as little as float drift does (RMSProp's steps barely depend on its slowly moving
    averages), so the optimizer's state is compared too: per state tensor, in norm,
        ||state_candidate - state_eager|| <= STATE_TOLERANCE ||state_eager - state_start||.
    Drift and a few flipped ReLUs change a few elements of a state tensor by a share of their change,
    a small part of the norm; a state that is not updated, or updated from a stale copy, misses a
    third or more of its change over 3 updates (ratio >= 3 at 0.1).
    """
    snapshot = TrainingSnapshot(module, optimizer, generators)
    start = _weights(module)
    previous, step_sizes = start, [weight.new_zeros(()) for weight in start]
    for _ in range(steps):
        eager()
        now = _weights(module)
        step_sizes = [torch.maximum(size, (a - b).abs().amax()) for size, a, b in zip(step_sizes, now, previous)]
        previous = now
    eager_state = _optimizer_state(optimizer)
    snapshot.restore()
    start_state = _optimizer_state(optimizer)  # as at the start (state the eager steps created is zeroed)
    for _ in range(steps):
        candidate()
    differences = [(param - weight).abs() for param, weight in zip(_weights(module), previous)]
    state_ratio = _state_ratio(start_state, eager_state, _optimizer_state(optimizer))
    snapshot.restore()
    bounds = [steps * (STEP_TOLERANCE * size + 2.0**-23 * weight.abs()) for size, weight in zip(step_sizes, previous)]
    ratios = [torch.where(d > 0, d / b, 0.0).amax() for d, b in zip(differences, bounds)]  # 0/0: equal, agrees
    largest = [ratios, [d.amax() for d in differences], step_sizes]
    ratio, difference, step = (float(torch.stack(values).amax()) for values in largest)
    check = ModeCheck(ratio <= 1.0 and state_ratio <= 1.0, difference, step, ratio, state_ratio)
    if not check.agree:
        warnings.warn(
            f"the {name} update ended {difference:.3g} from the eager update's weights after {steps} updates "
            f"from one state ({ratio:.3g} times the float32 bound; one update moves a weight up to {step:.3g}), "
            f"its optimizer state {state_ratio:.3g} times its bound: updates run eagerly from here on",
            RuntimeWarning,
            stacklevel=2,
        )
    return check
