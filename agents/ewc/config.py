"""The consolidation section of a run's config: which method keeps earlier games, and its Fisher."""

from __future__ import annotations

from dataclasses import dataclass

from agents.config import one_of
from agents.ewc.fisher import ESTIMATORS
from agents.ewc.methods import METHODS, penalty_of


@dataclass
class ConsolidationConfig:
    """What keeps earlier games: `finetune` (nothing), `ewc`, `online-ewc`, `l2`, `replay` or a penalty
    with replay (`ewc+replay`, ...)."""

    method: str = "ewc"
    """One of agents/ewc/methods.py's METHODS."""
    ewc_lambda: float = 400.0
    """Strength lambda of the penalty sum_g (lambda/2) sum_i F_g,i (theta_i - theta*_g,i)^2."""
    fisher: str = "policy"
    """Diagonal Fisher estimator: `policy`, `q-gaussian` or `empirical-td` (agents/ewc/fisher.py's ESTIMATORS)."""
    fisher_samples: int = 3_200
    """Replay states per Fisher (the EWC paper's 100 minibatches of 32)."""
    fisher_batch_size: int = 64
    """States per chunk while computing the Fisher (memory, not result)."""
    policy_temperature: float = 1.0
    """tau of the Boltzmann policy softmax(Q/tau) whose Fisher `policy` computes."""
    online_gamma: float = 1.0
    """Decay of the accumulated Fisher in `online-ewc`: F* <- gamma F* + F_new."""
    own_term_on_revisit: bool = True
    """Whether a revisited game's own term, (lambda/2) sum_i F_g,i (theta_i - theta*_g,i)^2 from its
    earlier visit, stays in the penalty while that game trains again (`ewc` and `l2`; `online-ewc`
    folds every game into one running quadratic and cannot leave one out, so it needs true). Either
    way the revisit's end replaces the term with a new one, and every other game's term applies.
    True, the default and what every run before this key did: the revisit restarts from an empty
    replay (and, on the `visit` epsilon clock, from full exploration), and its first updates fit a
    replay far smaller than the one it ended with; the old term keeps them from undoing what it learned,
    while the game's own TD loss can still move the weights where its data insists. False: while a
    game trains, its TD loss alone speaks for it (the penalty protects the games not being trained),
    so a first visit that ended poorly does not hold the revisit near its end point."""
    probe_states: int = 512
    """Replay states kept per game to measure forgetting (greedy-action agreement, |dQ|)."""
    consolidate_after_steps: int = 0
    """A game is consolidated (its Fisher and anchor stored, its penalty switched on) only at the end
    of a visit that brings its training, over all its visits, to at least this many agent steps.
    0: at the end of every game. The EWC paper's 20M frames = 5,000,000 agent steps ("the EWC penalty
    for a game was switched on only after that game had been trained for 20M frames")."""

    replay_per_game: int = 50_000
    """Methods with replay: transitions of each finished game kept for rehearsal (drawn uniformly from
    its replay at its end; a revisit replaces them). Memory: o_t-1 and o_t's newest frame each, 35 kB on
    Atari (50,000: 1.8 GB a game, on the training device), 2 kB on MinAtar (50,000: 100 MB)."""
    replay_share: float = 0.5
    """Methods with replay: the share of every batch drawn from earlier games' memories (split evenly
    between them), the rest from the current game's replay; CLEAR's 50/50 by default."""

    def problems(self) -> list[str]:
        checks = [
            (self.ewc_lambda >= 0, "consolidation.ewc_lambda must be >= 0"),
            (self.fisher_samples > 0, "consolidation.fisher_samples must be positive"),
            (self.fisher_batch_size > 0, "consolidation.fisher_batch_size must be positive"),
            (self.policy_temperature > 0, "consolidation.policy_temperature must be positive"),
            (0 <= self.online_gamma <= 1, "consolidation.online_gamma must be in [0, 1]"),
            (self.probe_states >= 0, "consolidation.probe_states must be >= 0"),
            (self.consolidate_after_steps >= 0, "consolidation.consolidate_after_steps must be >= 0"),
            (self.replay_per_game > 0, "consolidation.replay_per_game must be positive"),
            (0 <= self.replay_share < 1, "consolidation.replay_share must be in [0, 1): the current game needs a part"),
            (
                self.own_term_on_revisit or self.method not in METHODS or penalty_of(self.method) != "online-ewc",
                "consolidation.own_term_on_revisit: false needs one term per game (ewc, l2); online-ewc keeps one quadratic",
            ),
        ]
        return (
            one_of("consolidation.method", self.method, METHODS)
            + one_of("consolidation.fisher", self.fisher, ESTIMATORS)
            + [message for ok, message in checks if not ok]
        )
