"""The update's forward and backward passes compiled by `torch.compile` (TorchInductor), for CPUs.

Why: an eager update runs op by op, each op a dispatch from Python (three forward passes, the Huber
loss, the EWC penalty, then autograd's backward). Inductor traces the loss once, AOTAutograd derives
its backward pass ahead of time, and the element-wise work around the convolution and
matrix-multiply kernels (input scaling, ReLU, the loss, the penalty's multi-tensor ops) becomes a
few generated C++ loops; on a CPU it also runs the convolutions channels-last
(`torch._inductor.config.layout_optimization`), which oneDNN runs faster.

What stays eager: zeroing the gradients, clipping their norm (a few multi-tensor ops) and the
optimizer step (fused Adam is already one kernel on a CPU). Keeping those outside leaves the
optimizer, its state and checkpoints exactly as in eager mode.

What it needs: a C++ compiler (`g++`, or `$CXX`) and Python's headers, which inductor calls on the
first update of every new shape; `resolve_update_mode` refuses the mode without a compiler. The
first compile takes 30 to 80 s on a 2-core CPU (docs/performance.md); later processes reuse
inductor's on-disk cache and take less. Measured on that CPU it is at most ~1.2x faster per update
than eager, so `auto` does not pick it there: ask for it in a long Atari run on a CPU.

It compiles again only when what it traced changes: when the EWC penalty switches on (after the
first game), and for each game that has its own biases and gains. A new game without them has the
same shapes and reuses the compiled code.

Same results: not bit for bit (inductor adds the terms of a sum in its own order), equal to float32
rounding; tests/agents/test_compiled.py states the tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

RECOMPILE_LIMIT = 64
"""Traces kept per compiled function (torch's default is 8). One is traced per game with its own
biases and gains, and one more when the penalty switches on: a sequence of more games than the
default would silently fall back to eager."""


def compiler_available() -> bool:
    """Whether inductor finds a C++ compiler on this machine (it looks for `$CXX` or `g++`)."""
    from torch._inductor import cpp_builder  # imported when asked: dynamo and inductor take ~2.5 s to import

    try:
        cpp_builder.get_cpp_compiler()
    except Exception:  # inductor raises its own InvalidCxxCompiler, or an OS error
        return False
    return True


def compile_function(function: Callable) -> Callable:
    """`function` compiled with inductor's default mode and static shapes (a batch never changes shape)."""
    import torch._dynamo  # imported when compiling: every train.py and evaluate.py process would pay ~2.5 s

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(function, dynamic=False)
