"""The evaluation protocol (how a network is scored on a game) and the continual-learning metrics."""
