"""Where one update's GPU time goes: the kernels of the training defaults' update (Pong, Nature CNN,
batch 32, EWC penalty on, sampling from a replay), by GPU time per update, and the graphed update's
time with cuDNN's autotuner off and on, each in a process of its own: cuDNN keeps the algorithm it
chose for a shape, whatever the flag later says, so two settings timed in one process measure one.

    python -m bench.update_profile [--updates N] [--top K]

On a GPU a captured update is bound by the GPU's own time, not the host's launches (bench's
`kernels/update` counts them); this says which kernels that time is made of, so that the next speed-up
aims at them. CUDA only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import defaultdict

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from bench.build import make_learner, random_replay, synchronize
from bench.clock import count_until
from bench.settings import Settings, benchmark_config


def kernel_microseconds(update, updates: int) -> dict[str, float]:
    """GPU microseconds per update of each kernel name, over `updates` eager updates."""
    synchronize(torch.device("cuda"))
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as profiler:
        for _ in range(updates):
            update()
        synchronize(torch.device("cuda"))
    totals: dict[str, float] = defaultdict(float)
    for event in profiler.events():
        # a range a profiler annotation marks on the GPU (Optimizer.step#Adam.step) spans kernels counted on their own
        if event.device_type == DeviceType.CUDA and not getattr(event, "is_user_annotation", False):
            totals[event.name] += event.time_range.elapsed_us() / updates
    return dict(totals)


def graphed_milliseconds(config, replay, game: str, seconds: float = 1.0) -> float:
    """Milliseconds per update of the CUDA-graph learner sampling `replay`, after warm-up."""
    learner = make_learner(config, torch.device("cuda"), "cuda-graph")
    for _ in range(20):
        learner.update(replay, game)
    updates, elapsed = count_until(seconds, lambda: learner.update(replay, game), lambda: synchronize(torch.device("cuda")))
    return 1e3 * elapsed / updates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--time-graph-with-cudnn-benchmark", choices=("0", "1"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.update_profile needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    config = benchmark_config(Settings.for_device(device, quick=True))
    game = config.run.games[0]
    replay = random_replay(20_000, config.env.num_envs, device)
    if args.time_graph_with_cudnn_benchmark is not None:  # one setting, in this process alone
        torch.backends.cudnn.benchmark = args.time_graph_with_cudnn_benchmark == "1"
        print(f"{graphed_milliseconds(config, replay, game):.3f}")
        return 0
    for flag in ("0", "1"):
        timing = subprocess.run(
            [sys.executable, "-m", "bench.update_profile", "--time-graph-with-cudnn-benchmark", flag],
            capture_output=True,
            text=True,
        )
        milliseconds = timing.stdout.strip().splitlines()[-1] if timing.returncode == 0 and timing.stdout.strip() else "failed"
        print(f"cuda-graph update with sampling, cudnn.benchmark={flag == '1'}: {milliseconds} ms")
    learner = make_learner(config, device, "eager")
    for _ in range(10):
        learner.update(replay, game)
    kernels = kernel_microseconds(lambda: learner.update(replay, game), args.updates)
    total = sum(kernels.values())
    print(f"\neager update's kernels (cudnn.benchmark=False): {total:.0f} us of GPU time per update, {len(kernels)} kinds")
    for name, micros in sorted(kernels.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {micros:7.1f} us  {100 * micros / total:4.1f}%  {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
