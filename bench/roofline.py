"""How close a CPU update runs to the CPU's float32 arithmetic rate, and so how much faster any
float32 update could be at the same threads: the ceiling that says whether a speed-up target is
reachable by a better schedule of the same operations at all.

    achieved = F / t           F: floating-point operations of one update, t: its seconds (median round)
    ceiling  = R / achieved    R: the CPU's float32 matrix-multiply rate, measured in the same run

F is counted by torch's `FlopCounterMode` over one real update (the three forward passes and the
backward pass; the element-wise loss, penalty, clipping and optimizer step are not counted, they
are a rounding error beside the convolutions). R (`gemm_gflops` below) is the best rate of square
float32 matmuls of a few sizes, timed before and after the learner's rounds: a matmul is the case a
CPU's BLAS is built for, and the update's convolutions and small matmuls run at or below it. An
update at the ceiling would run every one of its operations at that rate with no overhead at all: no
compile mode, layout or schedule of the same operations gets past it; only fewer operations (Winograd
convolutions, another algorithm) or cheaper ones (bfloat16 on hardware that has it) would.

R is measured, not a datasheet peak, so the ceiling is an estimate: on a busy machine R can come
out low, and a ratio above its ceiling says so (the report flags it). On CUDA nothing of this is
computed: cuDNN runs convolutions in TF32 by default, and a small update there is bound by kernel
launches, not arithmetic.

End to end, the training loop can at best hide acting behind updates that run at R: its agent
steps/s are at most `steps_per_update x R / F`.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from agents.dqn import DQNLearner
from agents.replay import Transitions


def update_flops(learner: DQNLearner, batch: Transitions, game: str) -> int:
    """Floating-point operations of one update of an eager `learner` on `batch` (it does update the
    learner). Eager only: a replayed CUDA graph runs no operator the counter sees."""
    if learner.update_mode != "eager":
        raise ValueError(f"update_flops counts an eager update, not a {learner.update_mode!r} one")
    with FlopCounterMode(display=False) as counter:
        learner.update(batch, game)
    return counter.get_total_flops()


def roofline(flops_per_update: float, seconds_per_update: float, gemm_rate: float) -> dict[str, float]:
    """An update's achieved GFLOP/s, its share of the GEMM rate R, and the ceiling R / achieved."""
    achieved = flops_per_update / seconds_per_update / 1e9
    return {
        "gflop_per_update": flops_per_update / 1e9,
        "seconds_per_update": seconds_per_update,
        "achieved_gflops": achieved,
        "gemm_gflops": gemm_rate,
        "share_of_gemm_rate": achieved / gemm_rate,
        "float32_ceiling": gemm_rate / achieved,
    }


GEMM_SIDES = (256, 512, 1024)
"""Square float32 matmuls timed for the GEMM rate R: a BLAS is not fastest at one size for every
CPU and thread count, so R is the best over these (each a fraction of a second)."""


def matmul_repeats(side: int) -> int:
    """Matmuls per timing: about 2 GFLOP for the smaller sides, two at 1024."""
    return max(2, 2 * (GEMM_SIDES[-1] // side) ** 3)


def gemm_gflops(rounds: int = 3) -> float:
    """The CPU's float32 matrix-multiply rate at the current threads (R above), in GFLOP/s: the best
    over `rounds` timings of each of GEMM_SIDES."""
    best = 0.0
    for side in GEMM_SIDES:
        a, b = torch.ones(side, side), torch.ones(side, side)
        a @ b  # first call: the BLAS's set-up for this shape
        repeats = matmul_repeats(side)
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best = max(best, 2 * side**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best
