"""One typed configuration tree for a run: defaults here, YAML presets over them, flags over both.

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


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key."""


@dataclass
class EnvConfig:
    """Atari environments (ale-py's C++ vector environment with its built-in preprocessing)."""

    num_envs: int = 8
    """Parallel emulators. The replay ratio (one update per `agent.steps_per_update` steps) holds
    whatever this is: with 8 envs one vector step is 8 agent steps and 2 updates."""
    sticky_action_prob: float = 0.0
    """Repeat-action probability. 0.0 is the EWC paper's (and Nature DQN's) protocol; 0.25 is the
    stochastic protocol recommended by Machado et al. (JAIR 2018)."""
    max_episode_frames: int = 108_000
    """Episodes are cut (truncated, not terminated) after this many emulator frames (30 minutes)."""
    noop_max: int = 30
    """Up to this many no-op actions at the start of each episode."""


@dataclass
class NetworkConfig:
    architecture: str = "nature"
    """`nature`: Mnih et al. 2015 (conv 32-64-64, fc 512). `large`: the EWC paper's
    (conv 32-64-128, fc 1024)."""
    per_game_modulation: bool = False
    """Give every layer per-game biases and gains, y = (Wx + b + b_g) * g_g (EWC paper). They
    belong to one game each and are never consolidated."""


@dataclass
class AgentConfig:
    """Double DQN learner."""

    optimizer: str = "adam"
    """`adam` (CleanRL/Dopamine habit) or `rmsprop` (Nature DQN / EWC paper: centred, alpha 0.95,
    eps 0.01 inside the square root as in DeepMind's code; see agents/optim.py)."""
    learning_rate: float = 1e-4
    adam_eps: float = 1.5e-4
    gamma: float = 0.99
    batch_size: int = 32
    steps_per_update: int = 4
    """Agent steps per gradient update (replay ratio 8 = batch 32 every 4 steps)."""
    replay_capacity: int = 1_000_000
    """Transitions kept per game (each 84x84 frame is stored once: about 7 GB per million)."""
    learning_starts: int = 80_000
    """Agent steps of each game before its first update; the count restarts at every game."""
    target_update_every: int = 2_000
    """Gradient updates between target-network syncs (2,000 updates = 8,000 agent steps)."""
    max_grad_norm: float = 10.0
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay_start: int = 0
    """Agent steps into each game at which epsilon starts to fall."""
    epsilon_decay_steps: int = 0
    """Agent steps over which epsilon falls; 0 means `epsilon_decay_fraction` of the game."""
    epsilon_decay_fraction: float = 0.1
    update_mode: str = "eager"
    """How each gradient update runs: `eager`; `cuda-graph`, the whole update (forward, backward,
    clipping, optimizer step) captured once per game and replayed, which replaces a few hundred
    kernel launches per update by one (CUDA only); `auto`: `cuda-graph` on CUDA, `eager` elsewhere.
    Both are meant to give the same results. The default stays `eager` until `scripts/gpu_check.sh`
    has run the CUDA-graph tests on a GPU: no GPU was at hand when it was written."""


@dataclass
class ConsolidationConfig:
    """What keeps earlier games: `finetune` (nothing), `ewc`, `online-ewc` or `l2`."""

    method: str = "ewc"
    ewc_lambda: float = 400.0
    """Strength lambda of the penalty sum_g (lambda/2) sum_i F_g,i (theta_i - theta*_g,i)^2."""
    fisher: str = "policy"
    """Diagonal Fisher estimator: `policy`, `q-gaussian` or `empirical-td` (see agents/fisher.py)."""
    fisher_samples: int = 3_200
    """Replay states per Fisher (the EWC paper's 100 minibatches of 32)."""
    fisher_batch_size: int = 64
    """States per chunk while computing the Fisher (memory, not result)."""
    policy_temperature: float = 1.0
    """tau of the Boltzmann policy softmax(Q/tau) whose Fisher `policy` computes."""
    online_gamma: float = 1.0
    """Decay of the accumulated Fisher in `online-ewc`: F* <- gamma F* + F_new."""
    probe_states: int = 512
    """Replay states kept per game to measure forgetting (greedy-action agreement, |dQ|)."""


@dataclass
class EvalConfig:
    """Continual evaluation on every game of the sequence while training."""

    eval_every: int = 250_000
    """Agent steps between evaluations; 0 turns them off."""
    episodes: int = 8
    epsilon: float = 0.05
    max_episode_frames: int = 108_000


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
