"""bench.population's figures: which logged rates count, and the line each population size prints."""

from __future__ import annotations

from bench.population import learning_rate_of, table_line
from ewc_training.logger import MemoryLogger


def test_only_rates_logged_while_learning_count_in_every_game():
    """Learning starts 2,000 steps into each 8,000-step game; the first log after it still spans the
    start, and the log at a game's last step reads as the next game's step 0: both are left out."""
    logger = MemoryLogger()
    for step, rate in [(1000, 9e9), (3000, 9e9), (4000, 100.0), (8000, 200.0), (9000, 9e9), (11000, 9e9), (12000, 300.0)]:
        logger.scalar("charts/SPS", rate, step)
    assert learning_rate_of(logger, steps_per_game=8000) == 200.0


def test_a_line_gives_each_figure_its_share_of_the_bound_and_its_ratio_to_processes_apart():
    row = {
        "cells": 8,
        "emulators_alone": 200_000.0,
        "together_2_threads": 1_400.0,
        "apart": 1_000.0,
        "batched_update": {"seconds_per_update": 0.004, "gflop_per_update": 0.1, "achieved_gflops": 25.0, "float32_ceiling": 7.0},
    }
    line = table_line(row)
    assert line.startswith("P=8: emulators alone 200,000; together_2_threads 1,400 (0.7% of the bound, 1.40x apart)")
    assert "apart 1,000 (0.5% of the bound)" in line and "batched update 4.00 ms per cell" in line and "ceiling 7.0x" in line
