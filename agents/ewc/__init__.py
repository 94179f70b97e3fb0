"""Consolidation: what keeps earlier games while the agent learns the next (EWC and its baselines)."""
