"""Experiment tools: the evaluation matrix over a run's checkpoints, its reports, and sweeps."""
