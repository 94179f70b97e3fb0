"""The learning agent: Q-network, Double DQN learner, optimizer, replay, and consolidation (agents.ewc).

Pure PyTorch: nothing here writes files, parses command lines or logs to TensorBoard.
"""
