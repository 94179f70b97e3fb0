"""Throughput benchmark: `python -m bench` (see bench/measure.py for what it measures).

python -m bench                                  # standard settings on CUDA (150 s or less), small ones on a CPU
python -m bench --quick --out runs/bench.json    # every timed window halved
python -m bench --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bench.clock import seconds_since_process_start
from bench.measure import run
from bench.report import report
from bench.settings import Settings
from ewc_training.device import DeviceError, configure_threads, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    parser.add_argument("--quick", action="store_true", help="every timed window halved")
    parser.add_argument(
        "--num-envs", type=int, help="emulators of the end-to-end loop, one count (default 8, 16 and 32 on CUDA, 8 on a CPU)"
    )
    parser.add_argument("--fisher-samples", type=int, help="states of the timed Fisher (default 3,200 on CUDA, 128 on a CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: OMP_NUM_THREADS if set, else 1 on a CPU)")
    parser.add_argument("--out", help="where to write the JSON record (default runs/bench/throughput-<cpu|cuda>.json)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device, warn=False)
    except DeviceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be a positive whole number, got {args.threads}", file=sys.stderr)
        return 2
    print(configure_threads(args.threads, device), file=sys.stderr)
    settings = Settings.for_device(device, args.quick)
    overrides = {"num_envs": args.num_envs, "fisher_samples": args.fisher_samples}
    if args.num_envs:
        overrides["loop_env_counts"] = (args.num_envs,)
    settings = dataclasses.replace(settings, **{key: value for key, value in overrides.items() if value is not None})
    out = Path(args.out or f"runs/bench/throughput-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = run(
        device,
        settings,
        say=lambda text: print(text, file=sys.stderr, flush=True),
        save=lambda record: out.write_text(json.dumps(record, indent=2) + "\n"),
        already=seconds_since_process_start(),
    )
    print(report(record))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
