"""The permuted-digits check (the EWC paper's Fig. 2A): the DQN's consolidation code, on a classifier.

A short run (3 tasks, 8 passes each) asserts the paper's qualitative result: after the last task EWC
keeps the first task's accuracy far above plain SGD's, while every method learns each task it trains.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.ewc.fisher import diagonal_fisher
from ewc_experiments import permuted_digits as digits


@pytest.fixture(scope="module")
def results():
    settings = digits.Settings(tasks=3, epochs=8)
    tasks = digits.make_tasks(settings.tasks, settings.seed)
    return {method: digits.train_sequence(method, tasks, settings) for method in ("sgd", "ewc")}


@pytest.mark.slow
def test_ewc_keeps_the_first_task_far_better_than_sgd(results):
    sgd, ewc = results["sgd"], results["ewc"]
    assert min(np.diag(sgd)) > 0.85 and min(np.diag(ewc)) > 0.8  # each task is learned when trained
    # 0.27 here; 0.18 if EWC kept only the latest task's quadratic (no accumulation), 0 with no penalty
    assert ewc[-1, 0] - sgd[-1, 0] > 0.22, (ewc[-1, 0], sgd[-1, 0])


def test_the_tasks_are_pixel_permutations_of_one_split():
    tasks = digits.make_tasks(3, seed=0)
    first, second = tasks[0].train_x, tasks[1].train_x
    assert torch.equal(tasks[0].train_y, tasks[1].train_y)
    assert not torch.equal(first, second)
    assert torch.equal(first.sort(dim=1).values, second.sort(dim=1).values)  # the same pixels, moved
    assert len(tasks[0].test_x) + len(first) == 1797


def test_the_fisher_is_the_classifiers_own_softmax_fisher():
    """diagonal_fisher's `policy` estimator on logits is E_x sum_y p(y|x) (d log p(y|x) / d theta)^2:
    checked against autograd, one sample and one class at a time, on the first layer's weights."""
    torch.manual_seed(0)
    network = digits.Classifier(64, 16, 10, 0.0, 0.0)
    task = digits.make_tasks(1, seed=0)[0]
    fisher = diagonal_fisher(network, digits.fisher_batches(task, 20, 7), None, "policy")
    expected = torch.zeros_like(network.layers[0].weight)
    for x in task.train_x[:20]:
        log_p = torch.log_softmax(network(x.unsqueeze(0)), dim=1)[0]
        for y in range(10):
            (gradient,) = torch.autograd.grad(log_p[y], network.layers[0].weight, retain_graph=True)
            expected += log_p[y].exp().detach() * gradient.square()
    torch.testing.assert_close(fisher["layers.0.weight"], expected / 20, rtol=1e-4, atol=1e-9)
