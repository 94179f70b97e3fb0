"""Which game is this? Task recognition from frames alone: the "flat Forget-Me-Not" process that the
EWC paper's Atari agent uses instead of game labels (Kirkpatrick et al. 2017, Methods; Milan et al.,
"The Forget-me-not Process", NIPS 2016).

Each task k owns a generative model of a single observation: a factored categorical over its P
symbols (quantised pixels) with a Dirichlet(alpha) prior per symbol, whose predictive probability is

    p_k(x) = prod_p (n_k[p, x_p] + alpha) / (N_k + Q alpha)

with n_k[p, v] the times symbol p took value v in the N_k observations the model was trained on and
Q the alphabet size. A window of observations is scored sequentially, each observation by the
model updated with the window's earlier ones (the window's exact marginal likelihood). A spare model
that has seen nothing gives a first observation prod_p 1/Q: the "uniform hold-out", which then
adapts within the window like any other; without that, a sparse observation (MinAtar's mostly-zero
channels) fits any earlier task better than a uniform guess, and a new game is never noticed.
The current task is the hidden state of a hidden Markov model that stays with
probability 1 - rho and moves to each other state (the existing tasks and the spare one) with equal
shares of rho. Every `window` observations the posterior over states is updated with the window's
likelihood,

    log post'(k) = log sum_j post(j) T(j -> k) + sum_{x in window} log p_k(x) - log Z,

the most probable state takes the window into its counts (the others are left as they were), and
when that is the spare model a new task is made from it. A change of the most probable task is a
detected switch; returning to an earlier task is a revisit, recognised as that task.

What the paper leaves open, chosen here (each a RecognitionConfig field): frames halved to 42x42 as in
the paper, 8 grey levels, alpha 0.01 (a pixel value a task never showed costs log(alpha / N_k), far
below the spare model's log(1/Q) once N_k is more than a few frames), rho 1e-3 and windows of 4 as in
the paper. A MinAtar observation becomes one symbol per cell of its 10x10 grid, which object (channel)
is there, if any: 100 symbols of 11 values. (As 1,000 binary symbols, one per channel and cell, the
spare model's first observation costs 1,000 log 2 = 693 nats, more than a sparse frame of another
game costs under an earlier game's model: freeway after space_invaders was never noticed.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RecognitionConfig:
    window: int = 4
    """Observations per posterior update (the paper updates every 4 steps over windows of 4)."""
    levels: int = 8
    """Grey levels an Atari pixel is quantised to (the alphabet Q); not stated in the paper."""
    downscale: int = 2
    """Atari frames are averaged over downscale x downscale blocks: 84x84 -> 42x42 as in the paper."""
    alpha: float = 0.01
    """Dirichlet prior per symbol value; not stated in the paper. Small, so that a value a task never
    showed is strong evidence against it (log(alpha / N_k)) and the spare model, once it has seen a
    window's first observation, predicts the rest almost as well as a trained one: with 0.1 the third
    of three sparse MinAtar games was taken for an earlier one (tests/agents/test_task_recognition.py)."""
    switch_probability: float = 1e-3
    """rho: the prior chance of leaving the current task between two windows."""


def atari_symbols(frame: np.ndarray, config: RecognitionConfig) -> np.ndarray:
    """One 84x84 uint8 grayscale frame -> 42x42 block means quantised to `levels` values, flattened."""
    side = frame.shape[-1] // config.downscale
    blocks = frame[-(side * config.downscale) :, -(side * config.downscale) :].reshape(
        side, config.downscale, side, config.downscale
    )
    means = blocks.mean(axis=(1, 3))
    return np.minimum(means * config.levels / 256, config.levels - 1).astype(np.int64).ravel()


def minatar_symbols(state: np.ndarray) -> np.ndarray:
    """One MinAtar observation (channels, 10, 10) of 0/1 values -> one symbol per cell: 0 when the cell
    is empty, else 1 + the first channel set there (alphabet channels + 1, MINATAR_ALPHABET)."""
    occupied = state.any(axis=0)
    return np.where(occupied, state.argmax(axis=0) + 1, 0).astype(np.int64).ravel()


MINATAR_ALPHABET = 11
"""MinAtar's 10 channels (every game padded to them) and the empty cell."""


@dataclass
class Switch:
    """A change of the most probable task, reported at the end of the window that showed it."""

    observation: int
    """Observations seen when it was detected (the end of the window)."""
    previous: int | None
    task: int
    new: bool


@dataclass
class TaskRecognizer:
    """The flat Forget-Me-Not process over observations of `symbols` symbols from an alphabet of `alphabet`."""

    symbols: int
    alphabet: int
    config: RecognitionConfig = field(default_factory=RecognitionConfig)
    counts: list[np.ndarray] = field(default_factory=list)
    """n_k[p, v] for every task k made so far, (symbols, alphabet) each."""
    seen: list[int] = field(default_factory=list)
    """N_k: observations each task's model has taken in."""
    log_posterior: np.ndarray = field(default_factory=lambda: np.zeros(1))
    """Over the tasks and, last, the spare model; before any task exists the spare one is certain."""
    current: int | None = None
    observed: int = 0
    pending: list[np.ndarray] = field(default_factory=list)

    def log_likelihoods(self, window: np.ndarray) -> np.ndarray:
        """log p_k(window) for every task k and, last, the spare model (window: (n, symbols)): each
        model's sequential predictive, the window's earlier observations counted in for the later ones,
        which is the exact marginal likelihood of the window under the Dirichlet-multinomial."""
        spare = (np.zeros((self.symbols, self.alphabet)), 0)
        return np.array(
            [self._window_log_likelihood(counts, seen, window) for counts, seen in [*zip(self.counts, self.seen), spare]]
        )

    def _window_log_likelihood(self, counts: np.ndarray, seen: int, window: np.ndarray) -> float:
        alpha, rows = self.config.alpha, np.arange(self.symbols)
        within = np.zeros_like(counts)
        total = 0.0
        for t, observation in enumerate(window):
            total += float(np.log(counts[rows, observation] + within[rows, observation] + alpha).sum())
            total -= self.symbols * np.log(seen + t + self.alphabet * alpha)
            within[rows, observation] += 1
        return total

    def predicted_log_prior(self) -> np.ndarray:
        """log sum_j post(j) T(j -> k): stay with 1 - rho, move to each other state with rho / (states - 1)."""
        states, rho = len(self.log_posterior), self.config.switch_probability
        if states == 1:
            return np.zeros(1)
        transition = np.full((states, states), rho / (states - 1))
        np.fill_diagonal(transition, 1 - rho)
        return _log_matmul(self.log_posterior, np.log(transition))

    def observe(self, symbols: np.ndarray) -> Switch | None:
        """Take one observation's symbols; at the end of every window, update and report a switch."""
        self.pending.append(np.asarray(symbols, dtype=np.int64))
        self.observed += 1
        if len(self.pending) < self.config.window:
            return None
        window, self.pending = np.stack(self.pending), []
        return self.update(window)

    def update(self, window: np.ndarray) -> Switch | None:
        joint = self.predicted_log_prior() + self.log_likelihoods(window)
        self.log_posterior = joint - _log_sum_exp(joint)
        best = int(np.argmax(self.log_posterior))
        new = best == len(self.counts)
        if new:  # the spare model explains the window best: it becomes a task, and a fresh spare one is kept
            self.counts.append(np.zeros((self.symbols, self.alphabet)))
            self.seen.append(0)
            self.log_posterior = np.append(self.log_posterior, -np.inf)
        np.add.at(self.counts[best], (np.tile(np.arange(self.symbols), len(window)), window.ravel()), 1)
        self.seen[best] += len(window)
        previous, self.current = self.current, best
        if best == previous:
            return None
        return Switch(self.observed, previous, best, new)


def _log_sum_exp(values: np.ndarray) -> float:
    top = np.max(values)
    return float(top + np.log(np.exp(values - top).sum())) if np.isfinite(top) else float(top)


def _log_matmul(log_vector: np.ndarray, log_matrix: np.ndarray) -> np.ndarray:
    """log (exp(log_vector) @ exp(log_matrix)), without leaving the log domain."""
    combined = log_vector[:, None] + log_matrix
    top = combined.max(axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    return safe + np.log(np.exp(combined - safe).sum(axis=0))


@dataclass
class RecognitionReport:
    """How inferred tasks matched the true games, over one run's observations in order.

    confusion[game][task]: observations of `game` taken for `task` (None: before the first window).
    delays: per segment of one game, in order, the observations from its start until the process
    names the game's task (the task it held at the end of the game's first visit); None if never.
    false_new_tasks: tasks made beyond one per game (the spare model winning within a game).
    wrong_revisits: segments of a game seen before that end on another task than the game's.
    """

    confusion: dict[str, dict[int | None, int]]
    delays: list[int | None]
    false_new_tasks: int
    wrong_revisits: int


def recognition_report(games: list[str], tasks: list[int | None]) -> RecognitionReport:
    """Compare the true game of every observation with the task the process held after it."""
    if len(games) != len(tasks):
        raise ValueError(f"{len(games)} true games for {len(tasks)} inferred tasks")
    confusion: dict[str, dict[int | None, int]] = {}
    for game, task in zip(games, tasks):
        row = confusion.setdefault(game, {})
        row[task] = row.get(task, 0) + 1
    segments = _segments(games)
    task_of: dict[str, int | None] = {}
    delays, wrong = [], 0
    for game, start, end in segments:
        settled = tasks[end - 1]  # the task held when the segment ended
        if game in task_of:
            wrong += settled != task_of[game]
        else:
            task_of[game] = settled
        hits = [index for index in range(start, end) if tasks[index] == task_of[game]]
        delays.append(hits[0] - start if hits else None)
    made = {task for task in tasks if task is not None}
    return RecognitionReport(confusion, delays, max(0, len(made) - len(task_of)), wrong)


def _segments(games: list[str]) -> list[tuple[str, int, int]]:
    """(game, first index, end index) of every run of one game."""
    bounds = [0] + [index for index in range(1, len(games)) if games[index] != games[index - 1]] + [len(games)]
    return [(games[start], start, end) for start, end in zip(bounds, bounds[1:])]
