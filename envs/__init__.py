"""Environments: vector Atari games, their names and reference scores, and episode bookkeeping."""
