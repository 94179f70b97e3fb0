"""Scores aggregated across runs as Agarwal et al. (NeurIPS 2021, "Deep RL at the edge of the
statistical precipice") recommend, through their library rliable: the interquartile mean (IQM, the
mean of the middle 50% of runs) and 95% confidence intervals from a stratified bootstrap (runs are
resampled within each task, so a task with fewer runs is not drowned out).

    scores: array (runs, tasks); one score per run and task (e.g. a normalised score after the last game)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_REPS = 20_000
"""Bootstrap resamples per interval (rliable's default is 50,000; 20,000 moves the bounds < 0.5%)."""


class StatisticsError(ValueError):
    """rliable is missing, or there is nothing to aggregate."""


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def text(self, digits: int = 2) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError as error:
        raise StatisticsError(f"confidence intervals need rliable: pip install 'ewc-atari[report]' ({error})") from None
    return library, metrics


def interval_estimates(scores: dict[str, np.ndarray], statistic: str = "iqm", seed: int = 0) -> dict[str, Estimate]:
    """`statistic` ("iqm" or "mean") of each method's (runs, tasks) scores, with a 95% stratified-bootstrap CI."""
    library, metrics = _rliable()
    aggregate = {"iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean}[statistic]
    kept = {name: np.asarray(values, dtype=float) for name, values in scores.items() if np.size(values)}
    if not kept:
        raise StatisticsError("no scores to aggregate")
    points, intervals = library.get_interval_estimates(
        kept, lambda x: np.array([aggregate(x)]), reps=BOOTSTRAP_REPS, random_state=np.random.RandomState(seed)
    )
    return {name: Estimate(float(points[name][0]), float(intervals[name][0, 0]), float(intervals[name][1, 0]))
            for name in kept}
