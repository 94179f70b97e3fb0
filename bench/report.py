"""The benchmark's record as a table a person reads."""

from __future__ import annotations

from bench.settings import FISHER_REFERENCE_SAMPLES

VERDICTS = {
    "atari_learner_over_eager": "Atari (Nature CNN), learner alone: compiled (CUDA graph on CUDA) / eager float32",
    "atari_loop_over_cleanrl": "Atari (Nature CNN), end to end: train.py loop / CleanRL structure",
    "minatar_learner_over_eager": "MinAtar network, learner alone: compiled (CUDA graph on CUDA) / eager float32",
    "minatar_loop_over_cleanrl": "MinAtar network, end to end: train.py loop / CleanRL structure",
}
SOURCES = {"sampled": "with sampling", "ready_batch": "ready batch"}


def kernels(value: dict) -> str:
    """Kernels per update (and host launches on CUDA), or the profiler's error."""
    if value.get("kernels_per_update") is None:
        return "not counted (" + value.get("kernels_error", "profiler error") + ")"
    launches = f" ({value['launches_per_update']:,.0f} launches)" if "launches_per_update" in value else ""
    return f"{value['kernels_per_update']:,.0f}{launches}"


def learner_lines(learner: dict) -> list[str]:
    """Eager float32 and the faster mode, with sampling and on a ready batch: ms per update, first update
    (compile or capture), kernels per update; then the speed-ups."""
    lines = [f"  {'':<11} {'':<14} {'ms/update':>10} {'updates/s':>10} {'first update':>13}  kernels/update"]
    for mode in dict.fromkeys(["eager", learner["faster_mode"]]):
        for source, label in SOURCES.items():
            value = learner[mode][source]
            lines.append(
                f"  {mode:<11} {label:<14} {value['ms_per_update']:10.2f} {value['updates_per_s']:10,.1f}"
                f" {value['first_update_s']:11.2f} s  {kernels(value)}"
            )
    eager = learner["eager"]
    rounds = ", ".join(f"{r:.2f}" for r in learner["rounds_speedup_over_eager"])
    lines += [
        f"  {learner['faster_mode']} / eager: {learner['speedup_over_eager']:.2f}x with sampling (median of rounds: "
        f"{rounds}), {learner['speedup_over_eager_ready_batch']:.2f}x on a ready batch; "
        f"EWC penalty {100 * eager['penalty_share']:.1f}% of an eager update",
        f"  kernels: {learner['kernels_counted']}, over {learner['kernel_updates']} updates",
    ]
    return lines + roofline_lines(eager.get("roofline"))


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


def per_round(rounds: list[dict], key: str, spec: str, n: int | None = None) -> str:
    return ", ".join(format(r[key] if n is None else r[key][n], spec) for r in rounds)


def loop_lines(e2e: dict, loop_label: str) -> list[str]:
    """The training loop at each num_envs (with its share of its bound where measured), CleanRL's
    structure, and their ratio."""
    rounds, shares = e2e["rounds"], e2e.get("share_of_bound")
    lines = []
    for n, rate in e2e["loop_steps_per_s"].items():
        share = ""
        if shares is not None:
            share = f"  {100 * shares[n]:4.0f}% of bound"
        label = f"{loop_label} at {n} envs ({e2e['loop_update_mode']})"
        lines.append(f"  {label:<74}{rate:>9,.0f}   rounds: {per_round(rounds, 'loop_steps_per_s', ',.0f', n)}{share}")
    cleanrl = e2e.get("cleanrl")
    share = f"  {100 * cleanrl['share_of_bound']:4.0f}% of bound" if cleanrl else ""
    lines += [
        f"  {'CleanRL dqn_atari.py structure (1 env, synchronous, host replay, eager)':<74}{e2e['cleanrl_steps_per_s']:>9,.0f}"
        f"   rounds: {per_round(rounds, 'cleanrl_steps_per_s', ',.0f')}{share}",
        f"  train.py loop at {e2e['num_envs']} envs / CleanRL structure: {e2e['speedup_over_cleanrl']:.2f}x"
        f"   rounds: {per_round(rounds, 'speedup_over_cleanrl', '.2f')}",
    ]
    return lines


def bound_lines(record: dict) -> list[str]:
    """Each loop's bound, per round: min(env only at its num_envs, 4 x learner only with sampling)."""
    e2e, pipe = record["end_to_end"], record["pipeline"]
    lines = ["pipeline: end to end / min(env only at that num_envs, 4 x learner only with sampling), per round"]
    for n in e2e["loop_steps_per_s"]:
        terms = "; ".join(
            f"{r['loop_steps_per_s'][n]:,.0f} / min({r['env_only_steps_per_s'][n]:,.0f}, {r['learner_bound_steps_per_s']:,.0f})"
            for r in e2e["rounds"]
        )
        verdict = "PASS" if pipe["passed"][n] else "FAIL"
        lines.append(f"  {n:>3} envs: {terms}: median {100 * pipe['share_of_bound'][n]:.0f}% {verdict}")
    cleanrl = e2e["cleanrl"]
    bound = "min(env only at 1 env, 4 x eager learner)" if cleanrl["env_only_counted"] else "4 x eager learner alone"
    lines += [
        f"  target >= {100 * pipe['target']:.0f}% at every num_envs: " + ("PASS" if pipe["all_passed"] else "FAIL"),
        f"  CleanRL structure (synchronous: below its bound by design): {e2e['cleanrl_steps_per_s']:,.0f} / {bound} "
        f"{cleanrl['bound_steps_per_s']:,.0f} = {100 * cleanrl['share_of_bound']:.0f}%",
    ]
    return lines


def time_lines(record: dict) -> list[str]:
    """The planned budget against the seconds each part took."""
    budget, took = record["budget_s"], record["seconds_by_part"]
    parts = ", ".join(f"{part} {budget[part]:.0f}/{took.get(part, 0.0):.0f}" for part in budget if part != "total")
    return [
        f"benchmark time: planned {budget['total']:.0f} s, took {record['seconds']:.0f} s from the process's start "
        "(its exit not counted)",
        f"  planned/took per part, s: {parts}",
    ]


def report(record: dict) -> str:
    """The record as a table a person reads (the JSON holds the same figures, unrounded)."""
    m, st, learner = record["machine"], record["settings"], record["learner"]
    e2e, fisher, replay, memory = (record[key] for key in ("end_to_end", "fisher", "replay", "memory"))
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
        f"learner only (fastest of {st['learner_rounds']} rounds of {st['learner_seconds']:g} s; with sampling = "
        "update(replay), as training runs it; ready batch = update(batch))",
        *learner_lines(learner),
        "",
        f"end to end, agent steps/s (median of {len(e2e['rounds'])} rounds of {st['loop_seconds']:g} s per loop; "
        "each round measures everything below back to back)",
        *loop_lines(e2e, "train.py loop"),
        "",
        *bound_lines(record),
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
        "",
        *time_lines(record),
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
        "  learner only",
        *["  " + line for line in learner_lines(minatar["learner"])],
        f"  end to end, agent steps/s (median of {len(minatar['end_to_end']['rounds'])} rounds)",
        *["  " + line for line in loop_lines(minatar["end_to_end"], "train.py loop")],
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
