"""The throughput benchmark runs end to end and reports what it measured (its speed is not tested here:
the benchmark prints figures, tests do not time anything); its deadlines run on a fake clock, and its
budget, bounds and kernel counts follow their formulas."""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from agents.compiled import compiler_available
from agents.cuda_graph import resolve_update_mode
from bench.__main__ import main
from bench.clock import Window, count_until
from bench.kernels import tally
from bench.loop import cleanrl_share, share_of_bound
from bench.measure import pipeline_verdict, run
from bench.report import report
from bench.settings import Allowances, Settings

TINY = Settings(
    env_counts=(1, 2),
    env_seconds=0.05,
    loop_env_counts=(2,),
    num_envs=2,
    end_to_end_rounds=1,
    loop_seconds=0.3,
    cleanrl_seconds=0.3,
    warmup_seconds=0.05,
    learner_rounds=2,
    learner_seconds=0.05,
    kernel_updates=1,
    fisher_samples=16,
    replay_transitions=1_000,
    minatar_loop_seconds=0.3,
    minatar_cleanrl_seconds=0.3,
    minatar_learner_seconds=0.05,
    allowances=Allowances(start=1.0, emulator=0.1, learner=0.5, kernels=0.5, fisher=0.5, loop=1.0, cleanrl=0.5),
)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_count_until_stops_within_one_call_of_its_deadline_and_syncs_rarely():
    clock, syncs = FakeClock(), []

    def work():
        clock.now += 0.01

    calls, elapsed = count_until(1.0, work, lambda: syncs.append(clock.now), clock)
    assert 1.0 <= elapsed <= 1.0 + 0.01 + 1e-9 and calls == round(elapsed / 0.01)
    assert len(syncs) < 20  # chunks grow, then shrink towards the deadline: not one sync per call


def test_window_opens_after_the_warmup_from_the_first_update_and_counts_steps_inside_it():
    clock = FakeClock()
    window = Window(warmup=1.0, seconds=2.0, clock=clock)
    steps, closed = 0, False
    while not closed:  # 10 steps per 0.1 s; the first update comes at 0.5 s
        clock.now += 0.1
        steps += 10
        closed = window.tick(steps, ready=clock.now >= 0.5 - 1e-9)
    assert window.opened[0] == pytest.approx(1.5) and clock.now == pytest.approx(3.5)
    assert window.rate() == pytest.approx(100.0)


def test_a_window_that_never_opened_has_no_rate():
    window = Window(warmup=1.0, seconds=1.0, clock=FakeClock())
    window.tick(10, ready=True)
    with pytest.raises(RuntimeError, match="before its timed window"):
        window.rate()


def test_the_budget_adds_every_window_and_allowance():
    # TINY: emulators 0.1 s apiece, windows of 0.05 s (env, learner), 0.3 s (loops) after a 0.05 s warm-up
    expected = {
        "start": 1.0,
        "environment only": 0.1 * (1 + 2) + 2 * 2 * 0.05,  # 3 emulators started once, 2 counts timed twice
        "learner only": 5 * (0.5 + 2 * 0.05),  # 5 learners, 2 rounds each
        "fisher": 0.5,
        # the in-round learner built; 1 round: env at 2 envs, the loop (1 + 2 x 0.1 + 0.05 + 0.3),
        # the learner, CleanRL (0.5 + 0.1 + 0.05 + 0.3)
        "end to end": 0.5 + 0.05 + 1.55 + 0.05 + 0.95,
        "minatar": 3.0 + 1.55 + 0.95,
        "kernels": 2 * 0.5,  # Atari and MinAtar learners
    }
    assert TINY.budget() == pytest.approx({**expected, "total": 14.6})
    # a loop count the sweep lacks: its 4 emulators started once for env only, and every round a window and a loop
    wider = dataclasses.replace(TINY, loop_env_counts=(2, 4))
    assert wider.budget()["end to end"] - TINY.budget()["end to end"] == pytest.approx(0.4 + 0.05 + (1 + 0.4 + 0.05 + 0.3))


@pytest.mark.parametrize("quick", [False, True])
def test_the_cuda_settings_plan_150_s_at_most_and_the_cpu_ones_8_minutes(quick):
    cuda = Settings.for_device(torch.device("cuda"), quick)
    assert cuda.budget()["total"] <= 150
    assert cuda.counts == [8, 16, 32] and sorted(cuda.env_counts) == [8, 16, 32]
    assert Settings.for_device(torch.device("cpu"), quick).budget()["total"] <= 480


def test_share_of_bound_is_the_loop_over_the_slower_part_alone():
    # emulators alone 8,000 steps/s, learner alone 1,000 updates/s x 4 = 4,000: the learner bounds it
    assert share_of_bound(3_000.0, 8_000.0, 4_000.0) == pytest.approx(0.75)
    assert share_of_bound(3_000.0, 3_500.0, 4_000.0) == pytest.approx(3_000 / 3_500)
    verdict = pipeline_verdict({8: 0.85, 16: 0.75})
    assert verdict["passed"] == {8: True, 16: False} and not verdict["all_passed"]
    # CleanRL: 5 ms per eager update is 800 agent steps/s at 4 per update; 1 env alone at 1,200
    assert cleanrl_share(400.0, 5.0, 4, None)["share_of_bound"] == pytest.approx(0.5)
    assert cleanrl_share(400.0, 5.0, 4, 500.0)["share_of_bound"] == pytest.approx(0.8)


def event(name: str, device: DeviceType = DeviceType.CPU, parent=None) -> SimpleNamespace:
    return SimpleNamespace(name=name, device_type=device, cpu_parent=parent)


def test_kernels_are_device_events_on_cuda_and_top_level_aten_operators_on_a_cpu():
    conv = event("aten::conv2d")
    backward = event("autograd::engine::evaluate_function: ConvolutionBackward0")
    events = [
        conv,
        event("aten::convolution", parent=conv),  # nested: not counted
        event("aten::add_"),
        event("aten::mul", parent=backward),  # under autograd, not under an aten operator: counted
        backward,
        event("cudaLaunchKernel"),
        event("cudaGraphLaunch"),
        event("cudaStreamSynchronize"),
        event("void conv_kernel<float>", DeviceType.CUDA),
        event("Memcpy DtoD", DeviceType.CUDA),
    ]
    assert tally(events, updates=2, cuda=False) == {"kernels_per_update": 1.5}
    assert tally(events, updates=2, cuda=True) == {"kernels_per_update": 1.0, "launches_per_update": 1.0}


@pytest.fixture(scope="module")
def record() -> dict:
    """A tiny benchmark run. One torch thread: the run measures nothing here, and on a busy machine
    two threads waiting for each other make it several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(torch.device("cpu"), TINY, say=lambda text: None)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_benchmark_measures_every_figure_on_cpu(record):
    assert set(record["env_only_steps_per_s"]) == {1, 2}
    assert all(rate > 0 for rate in record["env_only_steps_per_s"].values())
    learner = record["learner"]
    default = resolve_update_mode("auto", torch.device("cpu"))
    faster = learner["faster_mode"]
    assert learner["default_mode"] == default and faster == ("compiled" if compiler_available() else "eager")
    assert "cuda-graph" not in learner and "top level" in learner["kernels_counted"]
    for mode in ("eager", faster):
        sampled, ready = learner[mode]["sampled"], learner[mode]["ready_batch"]
        assert sampled["updates_per_s"] > 0 and ready["updates_per_s"] > 0
        assert sampled["kernels_per_update"] > ready["kernels_per_update"] > 0  # sampling adds operators
        assert "launches_per_update" not in sampled  # a CPU launches nothing
    if faster == "compiled":  # the compiled forward and backward passes dispatch fewer operators
        assert learner["compiled"]["ready_batch"]["kernels_per_update"] < learner["eager"]["ready_batch"]["kernels_per_update"]
    assert learner["speedup_over_eager"] == pytest.approx(statistics.median(learner["rounds_speedup_over_eager"]))
    assert learner["speedup_over_eager_ready_batch"] == pytest.approx(
        statistics.median(learner["rounds_speedup_over_eager_ready_batch"])
    )
    e2e = record["end_to_end"]
    assert e2e["loop_update_mode"] == default and set(e2e["loop_steps_per_s"]) == {2}
    (one_round,) = e2e["rounds"]
    assert e2e["speedup_over_cleanrl"] == pytest.approx(one_round["loop_steps_per_s"][2] / one_round["cleanrl_steps_per_s"])
    bound = min(one_round["env_only_steps_per_s"][2], one_round["learner_bound_steps_per_s"])
    assert record["pipeline"]["share_of_bound"][2] == pytest.approx(one_round["loop_steps_per_s"][2] / bound)
    assert record["pipeline"]["passed"][2] == (record["pipeline"]["share_of_bound"][2] >= 0.8)
    assert e2e["cleanrl"]["env_only_counted"]  # the sweep has 1 env
    assert record["fisher"]["seconds_for_3200_is"] == "extrapolated linearly from 16 samples"
    assert 7_056 <= record["replay"]["bytes_per_transition"] < 7_100  # one 84x84 frame and a few flags
    assert record["memory"]["peak_host_rss_gb"] > 0
    minatar = record["minatar"]
    assert minatar["network"] == "minatar" and minatar["learner"]["eager"]["sampled"]["updates_per_s"] > 0
    assert minatar["end_to_end"]["loop_update_mode"] == default
    peer = record["peer"]
    assert peer["ratios"]["minatar_loop_over_cleanrl"] == minatar["end_to_end"]["speedup_over_cleanrl"]
    assert peer["passed"] == {key: ratio >= 1.5 for key, ratio in peer["ratios"].items()}
    arithmetic = learner["eager"]["roofline"]
    assert arithmetic["gflop_per_update"] == pytest.approx(2.783, abs=1e-3)  # Nature CNN, batch 32
    assert peer["float32_ceilings"]["atari_learner_over_eager"] == arithmetic["float32_ceiling"]
    assert peer["reachable"] == {key: ceiling >= 1.5 for key, ceiling in peer["float32_ceilings"].items()}
    assert 0 < arithmetic["share_of_gemm_rate"] and arithmetic["gemm_gflops"] > 0
    assert record["budget_s"] == TINY.budget()
    assert set(record["seconds_by_part"]) == set(TINY.budget()) - {"total"}
    assert record["seconds"] == pytest.approx(sum(record["seconds_by_part"].values()), rel=0.01)
    assert record["complete"]
    assert json.loads(json.dumps(record))["settings"]["num_envs"] == 2  # what --out writes


@pytest.mark.slow
def test_report_prints_the_pipeline_verdict_and_ratio(record):
    text = report(record)
    assert "2 envs: " in text and text.count("target >= 80% at every num_envs: ") == 1
    assert "CleanRL structure" in text and "extrapolated" in text
    rows = [line.split()[1:3] for line in text.splitlines() if re.match(r"\s+(eager|compiled) +(with|ready) ", line)]
    modes = 2 if record["learner"]["faster_mode"] != "eager" else 1
    assert len(rows) == 2 * modes * 2 and rows.count(["with", "sampling"]) == 2 * modes  # x 2 sources, Atari and MinAtar
    assert text.count("x  PASS") + text.count("x  MISS") == 4  # the peer comparison's four ratios
    assert text.count("float32 ceiling: no float32 update") == 2  # Nature CNN and MinAtar learners
    assert f"planned {TINY.budget()['total']:.0f} s, took" in text


def test_bad_device_is_an_error_message_not_a_traceback(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(["--device", "cuda", "--out", str(tmp_path / "out.json")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_the_update_profile_needs_cuda_and_says_so_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    from bench import update_profile

    assert update_profile.main([]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "needs a CUDA GPU" in error


@pytest.mark.parametrize("name", ["cudnn-benchmark", "tf32-matmul", "channels-last", "all"])
def test_each_speed_setting_computes_the_baselines_gradients_and_restores_torchs_flags(name):
    """A speed setting may change how an update runs, not what it computes: the same batch through a
    learner under it gives the baseline's loss and gradients to float32 rounding, and it leaves torch's
    flags as it found them. On a CPU only channels_last changes the computation (NHWC convolutions): the
    two flags act on CUDA alone, so for them this checks the restoring of the flags."""
    from bench.build import random_replay
    from bench.settings import benchmark_config
    from bench.update_profile import SPEED_SETTINGS

    cpu = torch.device("cpu")
    config = benchmark_config(TINY)
    batch = random_replay(64, config.env.num_envs, cpu).sample(8)
    flags_before = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    results = {}
    for setting_name in ("baseline", name):
        setting = SPEED_SETTINGS[setting_name]
        torch.manual_seed(0)
        with setting.flags():
            learner = setting.learner(config, cpu, "eager")
            stats = learner.update(batch, config.run.games[0])
        results[setting_name] = (
            stats.values,
            {n: p.grad.clone() for n, p in learner.online.named_parameters() if p.grad is not None},
        )
        # the weights, their gradients and the penalty's anchors all in the setting's layout, as in training
        for conv in (
            learner.online.layers[0].weight,
            learner.online.layers[0].weight.grad,
            learner.consolidation.anchor["layers.0.weight"],
        ):
            assert conv.is_contiguous(memory_format=torch.channels_last) == setting.channels_last
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32) == flags_before
    (baseline_stats, baseline_grads), (stats, grads) = results["baseline"], results[name]
    torch.testing.assert_close(stats, baseline_stats, rtol=1e-5, atol=1e-6)
    assert grads.keys() == baseline_grads.keys()
    torch.testing.assert_close(grads, baseline_grads, rtol=1e-4, atol=1e-6)  # names the parameter that differs
