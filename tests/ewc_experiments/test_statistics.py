"""statistics.interval_estimates against numpy on hand-made scores, and the sweep report's IQM column.

The bootstrap is cut to a few hundred resamples: the point estimates do not depend on it, and the
interval checks below hold at any count.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from ewc_experiments import statistics
from ewc_experiments.statistics import Estimate, StatisticsError, global_numpy_seed, interval_estimates
from ewc_experiments.sweep_plan import Cell
from ewc_experiments.sweep_report import NO_RLIABLE, CellResult, final_score_iqms, method_tables

pytest.importorskip("rliable", exc_type=ImportError)  # missing, or installed but unusable


@pytest.fixture(autouse=True)
def few_resamples(monkeypatch):
    monkeypatch.setattr(statistics, "BOOTSTRAP_REPS", 300)


def numpy_iqm(values) -> float:
    """The mean of the middle half: drop the lowest and highest quarter (rounded down) of the sorted scores."""
    flat = np.sort(np.ravel(values))
    cut = int(0.25 * len(flat))
    return float(flat[cut : len(flat) - cut].mean())


def test_iqm_and_mean_of_known_values():
    runs = np.array([[8.0], [1.0], [7.0], [2.0], [6.0], [3.0], [5.0], [4.0]])  # IQM = mean(3, 4, 5, 6)
    estimates = interval_estimates({"a": runs}, "iqm")
    assert estimates["a"].value == pytest.approx(4.5) == numpy_iqm(runs)
    assert interval_estimates({"a": runs}, "mean")["a"].value == pytest.approx(runs.mean())


def test_iqm_pools_the_tasks_as_rliable_does():
    scores = np.array([[0.1, 5.0], [0.4, 1.0], [0.2, 3.0], [0.9, 2.0]])  # (runs, tasks)
    assert interval_estimates({"a": scores}, "iqm")["a"].value == pytest.approx(numpy_iqm(scores))


def test_fewer_than_four_runs_give_the_plain_mean():
    runs = np.array([[0.2], [0.5], [1.1]])
    assert interval_estimates({"a": runs}, "iqm")["a"].value == pytest.approx(runs.mean())


@pytest.mark.parametrize("statistic", ["iqm", "mean"])
def test_the_interval_holds_the_estimate_and_lies_within_the_scores(statistic):
    runs = np.random.default_rng(3).normal(size=(6, 1))
    estimate = interval_estimates({"a": runs}, statistic)["a"]
    assert runs.min() <= estimate.low <= estimate.value <= estimate.high <= runs.max()
    assert estimate.low < estimate.high


def test_a_constant_array_has_a_zero_width_interval():
    estimate = interval_estimates({"a": np.full((5, 2), 0.7)}, "iqm")["a"]
    assert estimate.value == pytest.approx(0.7) and estimate.low == pytest.approx(0.7) and estimate.high == pytest.approx(0.7)


SCORES = {"ewc": np.array([[0.5], [0.7], [0.6]]), "finetune": np.array([[0.1], [0.0], [0.3], [0.2]])}


def test_several_methods_at_once():
    estimates = interval_estimates(SCORES, "mean")
    assert set(estimates) == {"ewc", "finetune"}
    assert estimates["ewc"].value == pytest.approx(0.6) and estimates["finetune"].value == pytest.approx(0.15)


def test_the_same_seed_gives_the_same_interval():
    """rliable 1.2 ignores its random_state; interval_estimates seeds NumPy's global generator around it."""
    runs = {"a": np.random.default_rng(0).normal(size=(10, 1))}
    first = interval_estimates(runs, "mean", seed=0)
    assert interval_estimates(runs, "mean", seed=0) == first


def test_with_numpy_seeded_around_it_the_interval_repeats():
    with global_numpy_seed(0):
        first = interval_estimates(SCORES, "mean")
    np.random.seed(1)  # the state outside the block does not matter
    with global_numpy_seed(0):
        assert interval_estimates(SCORES, "mean") == first


def test_empty_input_is_a_statistics_error():
    with pytest.raises(StatisticsError, match="no scores"):
        interval_estimates({"a": np.zeros((0, 1))})
    with pytest.raises(StatisticsError):
        interval_estimates({})


def test_estimate_text():
    assert Estimate(0.5, 0.25, 0.75).text() == "0.50 [0.25, 0.75]"


# ---- the sweep report's IQM column ----


def result(order, method, strength, seed, final):
    metrics = None if final is None else {"final_mean_hns": final, "mean_forgetting": 0.0}
    return CellResult(Cell(order, method, strength, seed), Path("cell"), metrics, "" if metrics else "error: boom")


def test_the_sweep_report_gives_every_row_its_iqm():
    given, reverse = ("pong", "breakout"), ("breakout", "pong")
    results = [
        result(given, "ewc", 400.0, 0, 0.1),
        result(given, "ewc", 400.0, 1, 0.3),
        result(reverse, "ewc", 400.0, 0, math.nan),
        result(reverse, "ewc", 400.0, 1, None),
    ]
    iqms = final_score_iqms(results)
    with global_numpy_seed(0):
        expected = interval_estimates({"x": np.array([[0.1], [0.3]])}, "iqm")["x"].text(3)
    assert iqms[("ewc", 400.0, given)] == expected
    assert iqms[("ewc", 400.0, reverse)] == "n/a"  # its one evaluated cell has no score (NaN)
    assert iqms[("ewc", 400.0, None)] == expected + " (2 with a score)"
    lines = method_tables(results, iqms)
    assert f"| 400 | pong → breakout | 2 | {expected} |" in lines
    assert "| 400 | breakout → pong | 1 of 2 | n/a |" in lines


def test_without_rliable_the_report_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # `import rliable` now raises ImportError
    iqms = final_score_iqms([result(("pong", "breakout"), "finetune", None, 0, 0.2)])
    assert iqms == {("finetune", None, ("pong", "breakout")): NO_RLIABLE}
    assert NO_RLIABLE == "n/a (pip install 'ewc-atari[report]')"


def test_paired_comparison_is_students_t_on_the_differences():
    a = np.array([1.0, 2.0, 3.0, 4.0, math.nan])
    b = np.array([0.5, 2.5, 1.0, 3.0, 0.0])  # differences 0.5, -0.5, 2.0, 1.0; the NaN seed is dropped
    result = statistics.paired_comparison(a, b)
    d = np.array([0.5, -0.5, 2.0, 1.0])
    half = 3.182446305284263 * d.std(ddof=1) / 2  # t_{0.975, 3} from a table
    assert result.seeds == 4 and result.wins == 3
    assert (result.difference.value, result.difference.low, result.difference.high) == pytest.approx(
        (0.75, 0.75 - half, 0.75 + half)
    )
    # P(a > b) over the 16 pairs of the kept seeds: a=1 beats 0.5 and ties 1.0; 2 beats 0.5, 1.0; 3 beats
    # 0.5, 2.5, 1.0 and ties 3.0; 4 beats all four: 1.5 + 2 + 3.5 + 4 = 11.
    assert result.probability_of_improvement == pytest.approx(11 / 16)


def test_paired_comparison_counts_ties_half_and_refuses_unpaired_input():
    same = statistics.paired_comparison(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert same.difference.value == 0 and same.wins == 0 and same.probability_of_improvement == pytest.approx(0.5)
    with pytest.raises(StatisticsError):
        statistics.paired_comparison(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(StatisticsError):
        statistics.paired_comparison(np.array([math.nan]), np.array([1.0]))


def test_the_paired_p_value_agrees_with_the_interval_and_scipy():
    from scipy.stats import ttest_1samp

    from ewc_experiments.statistics import paired_comparison, t_test_p_value

    a, b = np.array([0.9, 0.7, 0.8, 0.65, 0.75]), np.array([0.6, 0.65, 0.5, 0.7, 0.55])
    comparison = paired_comparison(a, b)
    assert comparison.p_value == pytest.approx(ttest_1samp(a - b, 0.0).pvalue)
    assert (comparison.p_value < 0.05) == (comparison.difference.low > 0)
    assert t_test_p_value(np.array([0.1, 0.1])) == 0.0 and np.isnan(t_test_p_value(np.array([0.3])))


def test_holm_adjusts_step_down_and_keeps_the_order():
    from ewc_experiments.statistics import holm

    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, max(0.04, 0.06), max(0.06, 0.06), min(1, 0.5)
    adjusted = holm({"a": 0.03, "b": 0.01, "c": 0.5, "d": 0.02, "later": float("nan")})
    assert adjusted["b"] == pytest.approx(0.04) and adjusted["d"] == pytest.approx(0.06)
    assert adjusted["a"] == pytest.approx(0.06) and adjusted["c"] == pytest.approx(0.5)
    assert np.isnan(adjusted["later"])  # not run yet: not counted in m
