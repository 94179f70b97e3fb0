"""Atari environments (ale-py's C++ vector environment) and per-game metadata."""
