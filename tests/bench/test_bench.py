"""The throughput benchmark runs end to end and reports what it measured (its speed is not tested here:
the benchmark prints figures, tests do not time anything)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from agents.compiled import compiler_available
from agents.cuda_graph import resolve_update_mode
from bench.__main__ import main
from bench.loop import steady_steps_per_second
from bench.measure import run
from bench.report import report
from bench.settings import Settings

TINY = Settings(
    env_counts=(1, 2),
    env_seconds=0.05,
    num_envs=2,
    end_to_end_steps=160,
    cleanrl_steps=100,
    end_to_end_rounds=1,
    learner_updates=2,
    fisher_samples=16,
    replay_transitions=1_000,
    minatar_steps=200,
    minatar_learner_updates=2,
)


def test_steady_rate_leaves_out_the_first_interval():
    # 100 steps at 50/s (start-up), then 200 steps at 100/s and 100 at 200/s: 300 steps in 2.5 s
    log = [(100, 50.0), (300, 100.0), (400, 200.0)]
    assert steady_steps_per_second(log) == pytest.approx(300 / 2.5)
    assert steady_steps_per_second([(100, 50.0)]) == pytest.approx(50.0)


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
    assert learner["eager"]["updates_per_s"] > 0 and learner[faster]["updates_per_s"] > 0 and "cuda-graph" not in learner
    assert learner["speedup_over_eager"] == pytest.approx(statistics.median(learner["rounds_speedup_over_eager"]))
    e2e = record["end_to_end"]
    assert e2e["loop_update_mode"] == default
    (one_round,) = e2e["rounds"]
    assert e2e["speedup_over_cleanrl"] == pytest.approx(one_round["loop_steps_per_s"] / one_round["cleanrl_steps_per_s"])
    bound = min(one_round["env_only_steps_per_s"], one_round["learner_bound_steps_per_s"])
    assert record["pipeline"]["efficiency"] == pytest.approx(one_round["loop_steps_per_s"] / bound)
    assert record["pipeline"]["passed"] == (record["pipeline"]["efficiency"] >= 0.8)
    assert record["fisher"]["seconds_for_3200_is"] == "extrapolated linearly from 16 samples"
    assert 7_056 <= record["replay"]["bytes_per_transition"] < 7_100  # one 84x84 frame and a few flags
    assert record["memory"]["peak_host_rss_gb"] > 0
    minatar = record["minatar"]
    assert minatar["network"] == "minatar" and minatar["learner"]["eager"]["updates_per_s"] > 0
    assert minatar["end_to_end"]["loop_update_mode"] == default
    peer = record["peer"]
    assert peer["ratios"]["minatar_loop_over_cleanrl"] == minatar["end_to_end"]["speedup_over_cleanrl"]
    assert peer["passed"] == {key: ratio >= 1.5 for key, ratio in peer["ratios"].items()}
    arithmetic = learner["eager"]["roofline"]
    assert arithmetic["gflop_per_update"] == pytest.approx(2.783, abs=1e-3)  # Nature CNN, batch 32
    assert peer["float32_ceilings"]["atari_learner_over_eager"] == arithmetic["float32_ceiling"]
    assert peer["reachable"] == {key: ceiling >= 1.5 for key, ceiling in peer["float32_ceilings"].items()}
    assert 0 < arithmetic["share_of_gemm_rate"] and arithmetic["gemm_gflops"] > 0
    assert record["complete"]
    assert json.loads(json.dumps(record))["settings"]["num_envs"] == 2  # what --out writes


@pytest.mark.slow
def test_report_prints_the_pipeline_verdict_and_ratio(record):
    text = report(record)
    assert text.count("target >= 80%) PASS") + text.count("target >= 80%) FAIL") == 1
    assert "CleanRL structure" in text and "extrapolated" in text
    assert text.count("x  PASS") + text.count("x  MISS") == 4  # the peer comparison's four ratios
    assert text.count("float32 ceiling: no float32 update") == 2  # Nature CNN and MinAtar learners


def test_bad_device_is_an_error_message_not_a_traceback(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(["--device", "cuda", "--out", str(tmp_path / "out.json")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
