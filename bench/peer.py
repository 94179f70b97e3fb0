"""The peer comparison: the learner's faster mode against eager float32 and the training loop against
CleanRL's loop structure, for the Atari and the MinAtar network, each ratio set against PEER_TARGET
and, on a CPU, against its float32 ceiling (bench/roofline.py), which says whether the target can be
met at all at these threads.
"""

from __future__ import annotations

import statistics

import torch

from bench.build import random_replay
from bench.loop import loop_against_cleanrl, loop_summary
from bench.parts import learner_figures
from bench.settings import PEER_TARGET, Settings, minatar_config
from envs.families import family_of_run


def minatar_figures(device: torch.device, settings: Settings, say) -> tuple[dict, dict]:
    """The MinAtar side of the peer comparison: learner only (eager against the faster mode, each with
    sampling and on a ready batch), then rounds of the training loop against CleanRL's loop structure,
    on the MinAtar paper's network. Also returns the learners' updates, to count their kernels later."""
    config = minatar_config(settings)
    family = family_of_run(config.run.games)
    replay = random_replay(8_192, settings.num_envs, device, family)
    say(f"MinAtar learner only ({settings.minatar_learner_seconds:g} s x {settings.learner_rounds} rounds per learner) ...")
    learner, updates = learner_figures(config, device, replay, settings.minatar_learner_seconds, settings.learner_rounds)
    rounds = []
    for index in range(1, settings.end_to_end_rounds + 1):
        say(
            f"MinAtar end to end, round {index}/{settings.end_to_end_rounds}: training loop "
            f"({settings.minatar_loop_seconds:g} s), CleanRL-structured loop ({settings.minatar_cleanrl_seconds:g} s) ..."
        )
        rounds.append(
            loop_against_cleanrl(
                config, device, settings.warmup_seconds, settings.minatar_loop_seconds, settings.minatar_cleanrl_seconds
            )
        )
    figures = {
        "game": config.run.games[0],
        "network": config.network.architecture,
        "learner": learner,
        "end_to_end": loop_summary(rounds, settings.num_envs),
    }
    return figures, updates


def peer_verdict(record: dict, steps_per_update: int) -> dict:
    """The peer comparison's four ratios (learner and end to end, Atari and MinAtar) against PEER_TARGET, and on
    a CPU the float32 ceiling of each: whether the target is reachable at all at these threads (and
    whether a ratio went past its ceiling, which would mean R was measured too low)."""
    ratios = {
        "atari_learner_over_eager": record["learner"]["speedup_over_eager"],
        "atari_loop_over_cleanrl": record["end_to_end"]["speedup_over_cleanrl"],
        "minatar_learner_over_eager": record["minatar"]["learner"]["speedup_over_eager"],
        "minatar_loop_over_cleanrl": record["minatar"]["end_to_end"]["speedup_over_cleanrl"],
    }
    passed = {key: ratio >= PEER_TARGET for key, ratio in ratios.items()}
    if "roofline" not in record["learner"]["eager"]:  # not on CUDA
        return {"target": PEER_TARGET, "ratios": ratios, "passed": passed}
    ceilings = {
        "atari_learner_over_eager": record["learner"]["eager"]["roofline"]["float32_ceiling"],
        "atari_loop_over_cleanrl": loop_ceiling(record["learner"], record["end_to_end"], steps_per_update),
        "minatar_learner_over_eager": record["minatar"]["learner"]["eager"]["roofline"]["float32_ceiling"],
        "minatar_loop_over_cleanrl": loop_ceiling(
            record["minatar"]["learner"], record["minatar"]["end_to_end"], steps_per_update
        ),
    }
    return {
        "target": PEER_TARGET,
        "ratios": ratios,
        "passed": passed,
        "float32_ceilings": ceilings,
        "reachable": {key: ceiling >= PEER_TARGET for key, ceiling in ceilings.items()},
        "ceiling_exceeded": {key: ratios[key] > ceiling for key, ceiling in ceilings.items()},
    }


def loop_ceiling(learner: dict, end_to_end: dict, steps_per_update: int) -> float:
    """The most the training loop could lead CleanRL's structure by at these threads in float32:
    acting wholly hidden, every update at the GEMM rate (bench/roofline.py); the median over rounds,
    as the ratio it bounds."""
    arithmetic = learner["eager"]["roofline"]
    fastest_loop = steps_per_update * arithmetic["gemm_gflops"] / arithmetic["gflop_per_update"]
    return statistics.median(fastest_loop / r["cleanrl_steps_per_s"] for r in end_to_end["rounds"])
