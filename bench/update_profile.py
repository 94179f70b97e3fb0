"""Where one update's GPU time goes: the graphed update's time under each candidate speed setting
(SPEED_SETTINGS), each in a process of its own, then the kernels of the training defaults' update
(Pong, Nature CNN, batch 32, EWC penalty on, sampling from a replay) by GPU time per update.
A process of its own per setting, because cuDNN keeps the algorithm it chose for a shape whatever
its flags later say: two settings timed in one process measure one.

    python -m bench.update_profile [--updates N] [--top K] [--kernels-under SETTING]

On a GPU a captured update is bound by the GPU's own time, not the host's launches (bench's
`kernels/update` counts them); this says which kernels that time is made of, so that the next speed-up
aims at them. CUDA only.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from agents.dqn import DQNLearner
from bench.build import make_learner, random_replay, synchronize
from bench.clock import count_until
from bench.settings import Settings, benchmark_config


@dataclass(frozen=True)
class SpeedSetting:
    """How the GPU runs an update, never what it computes beyond float rounding: a candidate to time
    before training adopts it.

    cudnn_benchmark  cuDNN times its algorithms for each shape once and keeps the fastest;
    tf32_matmul      the fully connected layers' GEMMs in TF32 (10-bit mantissa products, float32
                     sums), as cuDNN's convolutions already run by default;
    channels_last    the networks' convolution weights in NHWC, so that cuDNN's NHWC kernels need
                     fewer NCHW <-> NHWC conversions (the input's and the last feature map's, which
                     the first fully connected layer reads flattened in NCHW order, remain).
    """

    cudnn_benchmark: bool = False
    tf32_matmul: bool = False
    channels_last: bool = False

    @contextlib.contextmanager
    def flags(self) -> Iterator[None]:
        """torch's global flags of this setting, restored on leaving."""
        saved = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = self.cudnn_benchmark, self.tf32_matmul
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = saved

    def learner(self, config, device: torch.device, update_mode: str) -> DQNLearner:
        """bench's learner (EWC penalty on) with its weights in this setting's memory format."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return make_learner(config, device, update_mode, memory_format=memory_format)


SPEED_SETTINGS = {
    "baseline": SpeedSetting(),
    "cudnn-benchmark": SpeedSetting(cudnn_benchmark=True),
    "tf32-matmul": SpeedSetting(tf32_matmul=True),
    "channels-last": SpeedSetting(channels_last=True),
    "all": SpeedSetting(cudnn_benchmark=True, tf32_matmul=True, channels_last=True),
}


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


def graphed_milliseconds(config, replay, game: str, setting: SpeedSetting, seconds: float = 1.0) -> float:
    """Milliseconds per update of the CUDA-graph learner sampling `replay` under `setting`, after warm-up."""
    learner = setting.learner(config, torch.device("cuda"), "cuda-graph")
    for _ in range(20):
        learner.update(replay, game)
    updates, elapsed = count_until(seconds, lambda: learner.update(replay, game), lambda: synchronize(torch.device("cuda")))
    return 1e3 * elapsed / updates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument(
        "--kernels-under", choices=SPEED_SETTINGS, default="baseline", help="the setting whose kernels are listed"
    )
    parser.add_argument("--time-only", choices=SPEED_SETTINGS, help=argparse.SUPPRESS)  # one setting, in this process alone
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.update_profile needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    config = benchmark_config(Settings.for_device(device, quick=True))
    game = config.run.games[0]
    replay = random_replay(20_000, config.env.num_envs, device)
    if args.time_only is not None:
        setting = SPEED_SETTINGS[args.time_only]
        with setting.flags():
            print(f"{graphed_milliseconds(config, replay, game, setting):.3f}")
        return 0
    for name in SPEED_SETTINGS:
        timing = subprocess.run(
            [sys.executable, "-m", "bench.update_profile", "--time-only", name], capture_output=True, text=True
        )
        if timing.returncode == 0 and timing.stdout.strip():
            print(f"cuda-graph update with sampling, {name} ({SPEED_SETTINGS[name]}): {timing.stdout.split()[-1]} ms", flush=True)
        else:  # why, in its last lines: a loan is too short to rerun blind
            why = " | ".join(timing.stderr.strip().splitlines()[-3:])
            print(f"cuda-graph update with sampling, {name}: failed (exit {timing.returncode}): {why}", flush=True)
    setting = SPEED_SETTINGS[args.kernels_under]
    with setting.flags():
        learner = setting.learner(config, device, "eager")
        for _ in range(10):
            learner.update(replay, game)
        kernels = kernel_microseconds(lambda: learner.update(replay, game), args.updates)
    total = sum(kernels.values())
    print(f"\neager update's kernels under {args.kernels_under}: {total:.0f} us of GPU time per update, {len(kernels)} kinds")
    for name, micros in sorted(kernels.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {micros:7.1f} us  {100 * micros / total:4.1f}%  {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
