"""The benchmark's record as a table a person reads."""

from __future__ import annotations

from bench.settings import FISHER_REFERENCE_SAMPLES


def report(record: dict) -> str:
    """The record as a table a person reads (the JSON holds the same figures, unrounded)."""
    m, st, learner = record["machine"], record["settings"], record["learner"]
    e2e, pipe, fisher, replay, memory = (record[key] for key in ("end_to_end", "pipeline", "fisher", "replay", "memory"))
    rounds = e2e["rounds"]

    def per_round(key: str, spec: str) -> str:
        return ", ".join(format(r[key], spec) for r in rounds)

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
    ]
    for mode in ("eager", "cuda-graph", "compiled"):
        value = learner[mode]
        if isinstance(value, dict):
            lines.append(
                f"  {mode:<11} {value['updates_per_s']:>9,.1f} updates/s  {value['ms_per_update']:7.2f} ms/update"
                f"  (EWC penalty {100 * value['penalty_share']:.1f}% of it)"
            )
        else:
            lines.append(f"  {mode:<11} {value}")
    lines += [
        "",
        f"end to end, agent steps/s (median of {len(rounds)} rounds; each round measures everything below back to back)",
        f"  {'training loop (' + str(st['num_envs']) + ' envs, send/recv overlap, ' + e2e['loop_update_mode'] + ')':<58}"
        f"{e2e['loop_steps_per_s']:>9,.0f}   rounds: {per_round('loop_steps_per_s', ',.0f')}",
        f"  {'naive loop (1 env, synchronous, replay in host memory)':<58}{e2e['naive_steps_per_s']:>9,.0f}"
        f"   rounds: {per_round('naive_steps_per_s', ',.0f')}",
        f"  speed-up over naive: {e2e['speedup_over_naive']:.2f}x   rounds: {per_round('speedup_over_naive', '.2f')}",
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
        f"benchmark time: {record['seconds']:.0f} s",
    ]
    return "\n".join(lines)
