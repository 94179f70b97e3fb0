"""The training runner: the loop over a sequence of games, run directories, checkpoints, logging."""
