"""A training step captured once as a CUDA graph and replayed for every later batch.

Why: one Double DQN update of the Nature CNN at batch 32 launches a few hundred small kernels
(three forward passes, a backward pass, gradient clipping, Adam). On a GPU, launching them one by
one from Python takes longer than running them, so an eager learner leaves the GPU mostly idle.
Replaying a captured graph launches all of them at once.

A graph replays the exact kernels it recorded on the exact memory it recorded them on, so:
- it reads its inputs from fixed tensors (each call copies the batch in) and writes its outputs to
  fixed tensors (each call copies them out, or the next call would overwrite them);
- every tensor the step reads (weights, optimizer state, the consolidation's Fisher and anchor)
  must keep its storage; in-place updates are fine (a target-network sync copies into the target's
  weights), new tensors are not, so the owner recaptures when they are replaced;
- the step must not create state lazily inside the graph (Adam creates its moments at its first
  step): a few warm-up steps run first, then the weights and optimizer state are put back, so the
  warm-up leaves no trace and the results equal an eager run's;
- the optimizer must be built with `capturable=True` (its step counter then lives on the GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    MinAtar or smoke run (README, Performance); `compiled` is there to ask for.
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
    """Copies of a module's weights and an optimizer's state, to undo the warm-up steps exactly.

    Restoring copies values back into the same tensors (the graph keeps pointing at them). Optimizer
    state that did not exist at the snapshot is zeroed, which is how Adam and RMSprop initialise it.
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.module, self.optimizer = module, optimizer
        self.weights = [p.detach().clone() for p in module.parameters()]
        self.state = {
            param: {key: value.clone() for key, value in state.items() if torch.is_tensor(value)}
            for param, state in optimizer.state.items()
        }

    @torch.no_grad()
    def restore(self) -> None:
        for param, saved in zip(self.module.parameters(), self.weights):
            param.copy_(saved)
        for param, state in self.optimizer.state.items():
            saved = self.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and key in saved:
                    value.copy_(saved[key])
                elif torch.is_tensor(value):
                    value.zero_()


class GraphedStep:
    """`step(*inputs)` captured as a CUDA graph; calling it copies inputs in and outputs out."""

    def __init__(
        self, step: Step, example_inputs: Sequence[torch.Tensor], module: torch.nn.Module, optimizer: torch.optim.Optimizer
    ):
        self.inputs = [tensor.clone() for tensor in example_inputs]
        snapshot = TrainingSnapshot(module, optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                step(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        snapshot.restore()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = list(step(*self.inputs))

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        for fixed, value in zip(self.inputs, inputs, strict=True):
            fixed.copy_(value, non_blocking=True)
        self.graph.replay()
        return [output.clone() for output in self.outputs]
