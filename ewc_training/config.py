"""One typed configuration tree for a run: defaults here, YAML presets over them, flags over both.

Each package owns its section (envs.config, agents.config, agents.ewc.config, ewc_evaluation.config)
with a docstring per key and a `problems()` check; this module joins them into one tree.

`configs/*.yaml` hold only what a preset changes; `--set section.key=value` changes any key from
the command line. The resolved tree is written to every run directory (`config.yaml`), so a run
can be read, repeated and resumed from its own folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents.config import AgentConfig, NetworkConfig
from agents.ewc.config import ConsolidationConfig
from agents.network import ARCHITECTURE_FAMILY
from envs.config import EnvConfig
from envs.families import family_of_run
from ewc_evaluation.config import EvalConfig


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key."""


@dataclass
class RunConfig:
    games: list[str] = field(default_factory=lambda: ["pong", "breakout"])
    steps_per_game: int = 10_000_000
    seed: int = 0
    device: str = "auto"
    """`auto` (CUDA when present), `cuda` or `cpu`."""
    log_every: int = 10_000
    """Agent steps between scalar logs (losses are read back from the GPU only then)."""
    checkpoint_every: int = 500_000
    """Agent steps between writes of checkpoints/latest.pt (game ends are always saved)."""
    save_replay: bool = False
    """Also save the replay with latest.pt, so a resumed game continues with it (as large as the
    replay: about 7 GB per million transitions). Without it a resumed game refills its replay."""
    analysis_plan: str = ""
    """The SHA-256 of the analysis plan this run is a cell of (ewc_experiments/analysis_plan.py prints
    the sweeps that set it); training ignores it, and the plan's page refuses cells of another plan."""

    def problems(self) -> list[str]:
        checks = [
            (self.steps_per_game > 0, "run.steps_per_game must be positive"),
            (0 <= self.seed < 2**31, "run.seed must be in [0, 2^31)"),
        ]
        return [message for ok, message in checks if not ok]


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    consolidation: ConsolidationConfig = field(default_factory=ConsolidationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """`section.key` -> value, as TensorBoard's hyperparameter table shows it."""
        return {f"{section}.{key}": value for section, values in self.to_dict().items() for key, value in values.items()}

    def validate(self) -> None:
        """Reject settings that would fail later (after an hour of training), with the key named.

        Each section checks its own keys (`problems()`); what spans sections is checked here.
        """
        problems = [message for section in dataclasses.fields(self) for message in getattr(self, section.name).problems()]
        try:
            family = family_of_run(self.run.games).name
        except ValueError as error:
            problems.append(f"run.games: {error}")
        else:
            made_for = ARCHITECTURE_FAMILY.get(self.network.architecture, family)
            if made_for != family:
                problems.append(
                    f"network.architecture={self.network.architecture} is made for {made_for} games, but run.games "
                    f"({','.join(dict.fromkeys(self.run.games))}) are {family} games"
                )
        minimum_replay = 6 * self.env.num_envs
        if self.agent.replay_capacity < minimum_replay:
            problems.append(f"agent.replay_capacity must be at least 6 x env.num_envs = {minimum_replay}")
        if problems:
            raise ConfigError(problems[0])


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check `value` against the field type (int widens to float; lists are checked per item)."""
    origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item_kind,) = typing.get_args(kind)
        return [_coerce(item, item_kind, key) for item in value]
    if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML reads `1e-4` (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be float, got {value!r}") from None
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _set_key(config: Config, dotted: str, value: Any) -> None:
    """Set `section.key` to `value`, naming the closest valid key when it does not exist."""
    section_name, _, key = dotted.partition(".")
    sections = [f.name for f in dataclasses.fields(config)]
    if section_name not in sections or not key:
        raise ConfigError(f"unknown config key {dotted!r}{_suggest(section_name, sections)}")
    section = getattr(config, section_name)
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        options = [f"{section_name}.{name}" for name in hints]
        raise ConfigError(f"unknown config key {dotted!r}{_suggest(dotted, options)}")
    setattr(section, key, _coerce(value, hints[key], dotted))


def apply_mapping(config: Config, mapping: dict[str, Any]) -> None:
    """Apply a nested mapping as read from YAML: {section: {key: value}}."""
    for section_name, values in mapping.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section_name!r} must be a mapping of keys")
        for key, value in values.items():
            _set_key(config, f"{section_name}.{key}", value)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a preset; a file that is missing or does not parse is a ConfigError, not a traceback."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    try:
        mapping = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"config {path} is not valid YAML{where}") from None
    if not isinstance(mapping, dict):
        raise ConfigError(f"config {path} must be a mapping of sections")
    return mapping


def apply_override(config: Config, assignment: str) -> None:
    """Apply one `section.key=value` (value parsed as YAML: `1e-4`, `true`, `[pong, breakout]`)."""
    dotted, sep, text = assignment.partition("=")
    if not sep:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"override {assignment!r}: value does not parse") from None
    _set_key(config, dotted.strip(), value)


def build_config(preset: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML preset, then `section.key=value` overrides, in that order."""
    config = Config()
    if preset is not None:
        apply_mapping(config, load_yaml(preset))
    for assignment in overrides:
        apply_override(config, assignment)
    return config


def config_from_dict(mapping: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `to_dict` (in a checkpoint or a run's config.yaml)."""
    config = Config()
    apply_mapping(config, mapping)
    return config
