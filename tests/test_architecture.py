"""The package map holds: imports flow one way, the agent stays pure, errors stay one line.

    envs  <-  agents  <-  ewc_evaluation  <-  ewc_training  <-  ewc_experiments  <-  bench, scripts

A module may import its own layer and the layers to its left, never one to its right, and no
module imports a script (train.py, evaluate.py, sweep.py). docs/architecture.md draws the same map.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = {"envs": 0, "agents": 1, "ewc_evaluation": 2, "ewc_training": 3, "ewc_experiments": 4, "bench": 5}
SCRIPTS = {"train": 5, "evaluate": 5, "sweep": 5}
AGENT_MUST_NOT_IMPORT = {"argparse", "tensorboard", "torch.utils.tensorboard", "tqdm", "yaml", "json", "pathlib", "os"}
"""The agent is pure PyTorch: no command lines, files or TensorBoard."""


def project_modules() -> list[Path]:
    files = [path for package in LAYERS for path in (ROOT / package).rglob("*.py")]
    return files + [ROOT / f"{script}.py" for script in SCRIPTS]


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, at any depth of the file (function-level imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def layer_of(path: Path) -> int:
    top = path.relative_to(ROOT).parts[0].removesuffix(".py")
    return {**LAYERS, **SCRIPTS}[top]


def test_every_package_is_in_the_layer_map():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYERS), "a new top-level package needs its place in LAYERS and docs/architecture.md"


@pytest.mark.parametrize("path", project_modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_flow_one_way(path):
    own = layer_of(path)
    for name in imported_modules(path):
        top = name.split(".")[0]
        assert top not in SCRIPTS, f"{path.name} imports the script {top}.py; move what it needs into a package"
        if top in LAYERS:
            assert LAYERS[top] <= own, f"{path.relative_to(ROOT)} imports {name}, a layer above it"


@pytest.mark.parametrize("path", sorted((ROOT / "agents").rglob("*.py")), ids=lambda path: str(path.relative_to(ROOT)))
def test_the_agent_writes_no_files_and_parses_no_command_lines(path):
    for name in imported_modules(path):
        assert not any(name == banned or name.startswith(banned + ".") for banned in AGENT_MUST_NOT_IMPORT), (
            f"{path.relative_to(ROOT)} imports {name}"
        )


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The check above can fail: an agent module that imports the trainer is flagged."""
    bad = ROOT / "agents" / "_upward_import_probe.py"
    bad.write_text("from ewc_training.trainer import SequenceTrainer\n")
    try:
        with pytest.raises(AssertionError, match="a layer above it"):
            test_imports_flow_one_way(bad)
    finally:
        bad.unlink()


def test_every_user_error_is_reported_in_one_line():
    """Every project exception class a user can cause is caught by the scripts' USER_ERRORS."""
    import ewc_experiments.cli as cli

    errors = []
    for path in project_modules():
        if path.parent == ROOT:
            continue
        module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = __import__(module_name, fromlist=["_"])
        errors += [
            obj
            for name, obj in inspect.getmembers(module, inspect.isclass)
            if name.endswith("Error") and obj.__module__ == module_name
        ]
    assert len(errors) >= 8
    for error in errors:
        assert issubclass(error, cli.USER_ERRORS), f"{error.__module__}.{error.__name__} would print a traceback"


def test_the_methods_page_lists_every_registry_exactly():
    """docs/methods.md's "Every choice" table names exactly the options each registry holds."""
    from agents.config import EPSILON_CLOCKS, GRAD_CLIP_SCOPES, LOSS_REDUCTIONS
    from agents.cuda_graph import UPDATE_MODES
    from agents.ewc.fisher import ESTIMATORS
    from agents.ewc.methods import METHODS
    from agents.network import ARCHITECTURES
    from agents.optim import OPTIMIZERS

    registries = {
        "consolidation.method": METHODS,
        "consolidation.fisher": ESTIMATORS,
        "agent.optimizer": OPTIMIZERS,
        "agent.loss_reduction": LOSS_REDUCTIONS,
        "agent.grad_clip_scope": GRAD_CLIP_SCOPES,
        "agent.epsilon_clock": EPSILON_CLOCKS,
        "network.architecture": ARCHITECTURES,
        "agent.update_mode": UPDATE_MODES,
    }
    rows = {}
    for line in (ROOT / "docs" / "methods.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].strip("`") in registries:
            rows[cells[1].strip("`")] = [option.strip().strip("`") for option in cells[2].split(",")]
    assert set(rows) == set(registries)
    for key, registry in registries.items():
        assert rows[key] == list(registry), f"docs/methods.md's {key} row does not match the registry"


def test_ruff_lint_and_format_are_clean():
    """The committed ruff config (pyproject.toml) holds for the whole tree: lint and format."""
    import subprocess
    import sys

    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
