"""The benchmark's record as a table a person reads."""

from __future__ import annotations

from bench.settings import FISHER_REFERENCE_SAMPLES

VERDICTS = {
    "atari_learner_over_eager": "Atari (Nature CNN), learner alone: compiled (CUDA graph on CUDA) / eager float32",
    "atari_loop_over_cleanrl": "Atari (Nature CNN), end to end: train.py loop / CleanRL structure",
    "minatar_learner_over_eager": "MinAtar network, learner alone: compiled (CUDA graph on CUDA) / eager float32",
    "minatar_loop_over_cleanrl": "MinAtar network, end to end: train.py loop / CleanRL structure",
}


def learner_lines(learner: dict) -> list[str]:
    """Eager float32 and the faster mode: updates/s, first update (compile or capture), speed-up."""
    lines = []
    for mode in dict.fromkeys(["eager", learner["faster_mode"]]):
        value = learner[mode]
        note = f"  (EWC penalty {100 * value['penalty_share']:.1f}% of it)" if "penalty_share" in value else ""
        lines.append(
            f"  {mode:<11} {value['updates_per_s']:>9,.1f} updates/s  {value['ms_per_update']:7.2f} ms/update"
            f"  first update {value['first_update_s']:6.1f} s{note}"
        )
    rounds = ", ".join(f"{r:.2f}" for r in learner["rounds_speedup_over_eager"])
    lines.append(f"  {learner['faster_mode']} / eager: {learner['speedup_over_eager']:.2f}x (median of rounds: {rounds})")
    return lines + roofline_lines(learner["eager"].get("roofline"))


def roofline_lines(arithmetic: dict | None) -> list[str]:
    """What bench/roofline.py says of the eager update on a CPU: how near the float32 rate it runs."""
    if arithmetic is None:
        return []
    return [
        f"  arithmetic: {arithmetic['gflop_per_update']:.3f} GFLOP per update; eager (median round, "
        f"{1e3 * arithmetic['seconds_per_update']:.2f} ms) reaches {arithmetic['achieved_gflops']:.1f} GFLOP/s, "
        f"{100 * arithmetic['share_of_gemm_rate']:.0f}% of this CPU's float32 matmul rate "
        f"({arithmetic['gemm_gflops']:.1f} GFLOP/s)",
        "  float32 ceiling: no float32 update at these threads can beat eager by more than "
        f"about {arithmetic['float32_ceiling']:.2f}x",
    ]


def loop_lines(e2e: dict, loop_label: str) -> list[str]:
    rounds = e2e["rounds"]

    def per_round(key: str, spec: str) -> str:
        return ", ".join(format(r[key], spec) for r in rounds)

    return [
        f"  {loop_label + ' (' + e2e['loop_update_mode'] + ')':<74}{e2e['loop_steps_per_s']:>9,.0f}"
        f"   rounds: {per_round('loop_steps_per_s', ',.0f')}",
        f"  {'CleanRL dqn_atari.py structure (1 env, synchronous, host replay, eager)':<74}{e2e['cleanrl_steps_per_s']:>9,.0f}"
        f"   rounds: {per_round('cleanrl_steps_per_s', ',.0f')}",
        f"  train.py loop / CleanRL structure: {e2e['speedup_over_cleanrl']:.2f}x"
        f"   rounds: {per_round('speedup_over_cleanrl', '.2f')}",
    ]


def report(record: dict) -> str:
    """The record as a table a person reads (the JSON holds the same figures, unrounded)."""
    m, st, learner = record["machine"], record["settings"], record["learner"]
    e2e, pipe, fisher, replay, memory = (record[key] for key in ("end_to_end", "pipeline", "fisher", "replay", "memory"))
    rounds = e2e["rounds"]
    env = record["env_only_steps_per_s"]
    lines = [
        f"device: {m['device']} | {m['cpu_cores']} CPU cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"ale-py {m['ale_py']} | load average {m['load_average_1min_at_start']:.1f} at start, "
        f"{m['load_average_1min_at_end']:.1f} at end",
        f"game {st['game']}, Nature CNN, 18 actions, batch 32, one update per 4 agent steps, EWC penalty on",
        "",
        "environment only, agent steps/s (send/recv, random actions)",
        "  num_envs  " + "".join(f"{n:>9}" for n in env),
        "  steps/s   " + "".join(f"{v:>9,.0f}" for v in env.values()),
        "",
        "learner only, sample + update",
        *learner_lines(learner),
        "",
        f"end to end, agent steps/s (median of {len(rounds)} rounds; each round measures everything below back to back)",
        *loop_lines(e2e, f"train.py loop ({st['num_envs']} envs, send/recv overlap)"),
        "",
        "pipeline: end to end / min(env only, 4 x learner only), per round: "
        + "; ".join(
            f"{r['loop_steps_per_s']:,.0f} / min({r['env_only_steps_per_s']:,.0f}, "
            f"{r['learner_bound_steps_per_s']:,.0f}) = {100 * r['pipeline_efficiency']:.0f}%"
            for r in rounds
        ),
        f"  median {100 * pipe['efficiency']:.0f}% (target >= {100 * pipe['target']:.0f}%) "
        + ("PASS" if pipe["passed"] else "FAIL"),
        "",
        f"policy Fisher: {fisher['samples']:,} samples in {fisher['seconds']:.2f} s ({fisher['ms_per_sample']:.1f} ms/sample); "
        f"{FISHER_REFERENCE_SAMPLES:,} samples: {fisher[f'seconds_for_{FISHER_REFERENCE_SAMPLES}']:.1f} s "
        f"({fisher[f'seconds_for_{FISHER_REFERENCE_SAMPLES}_is']})",
        f"replay: {replay['bytes_per_transition']:,.0f} B per transition -> {replay['gb_per_million_transitions']:.2f} GB "
        f"per 1M transitions (allocated {replay['capacity']:,})"
        + (f", {replay['device_gb_allocated']:.2f} GB on the GPU" if "device_gb_allocated" in replay else ""),
        f"memory: peak host RSS {memory['peak_host_rss_gb']:.2f} GB"
        + (
            f", peak GPU {memory['peak_gpu_allocated_gb']:.2f} GB allocated / {memory['peak_gpu_reserved_gb']:.2f} GB reserved"
            if "peak_gpu_allocated_gb" in memory
            else ""
        ),
        "",
        *peer_lines(record),
        f"benchmark time: {record['seconds']:.0f} s",
    ]
    return "\n".join(lines)


def peer_lines(record: dict) -> list[str]:
    """The MinAtar figures, then the peer comparison's four ratios against their target, each with its
    float32 ceiling (bench/roofline.py): a target above its ceiling cannot be met in float32 at these
    threads."""
    minatar, peer = record["minatar"], record["peer"]
    lines = [
        f"MinAtar ({minatar['game']}, network {minatar['network']}, 6 actions, batch 32, one update per 4 agent steps, "
        "EWC penalty on)",
        "  learner only, sample + update",
        *["  " + line for line in learner_lines(minatar["learner"])],
        f"  end to end, agent steps/s (median of {len(minatar['end_to_end']['rounds'])} rounds)",
        *["  " + line for line in loop_lines(minatar["end_to_end"], f"train.py loop ({record['settings']['num_envs']} envs)")],
        "",
        f"peer comparison (torch {record['machine']['torch_threads']} threads), "
        f"target >= {peer['target']:.1f}x, medians of rounds",
    ]
    for key, label in VERDICTS.items():
        verdict = "PASS" if peer["passed"][key] else "MISS"
        lines.append(f"  {label:<82}{peer['ratios'][key]:6.2f}x  {verdict}{ceiling_note(peer, key)}")
    return lines


def ceiling_note(peer: dict, key: str) -> str:
    """The ratio's float32 ceiling (CPU only), and whether the target lies above it."""
    if "float32_ceilings" not in peer:
        return ""
    if peer["ceiling_exceeded"][key]:
        return f"  (ceiling {peer['float32_ceilings'][key]:.2f}x exceeded: the matmul rate was measured too low)"
    reach = "" if peer["reachable"][key] else ", the target is out of reach in float32"
    return f"  (ceiling {peer['float32_ceilings'][key]:.2f}x{reach})"
