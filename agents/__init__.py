"""The learner side: network, Double-DQN learner, replay, Fisher, consolidation, checkpoints."""
