"""The EWC paper's supervised experiment (Kirkpatrick et al. 2017, Fig. 2A: SGD, L2 and EWC; Fig. 2B's
dropout baseline beside them) as a one-minute check of
the consolidation code: one classifier learns a sequence of pixel-permuted digit tasks with SGD, L2,
dropout and EWC, and each task's test accuracy is printed (and plotted) after every task.

    pip install -e ".[digits]"                                               # scikit-learn, for the data
    python -m ewc_experiments.permuted_digits                                # 5 tasks, about 30 s on one core
    python -m ewc_experiments.permuted_digits --tasks 3 --out /tmp/digits.png

The consolidation is the DQN's own, not a copy: `agents.ewc.methods.make_consolidation` gives the
penalty (lambda/2) sum_g sum_i F_g,i (theta_i - theta*_g,i)^2 that accumulates over tasks, and
`agents.ewc.fisher.diagonal_fisher` with the `policy` estimator gives each task's Fisher: for a
classifier p(y|x) = softmax(f(x)) that is exactly its Fisher, F = E_x sum_y p(y|x) (grad log p(y|x))^2,
the DQN's softmax(Q) with the logits f(x) in place of Q (temperature 1).

The data are scikit-learn's 8x8 digits (1,797 images, 10 classes), which ship inside the
scikit-learn wheel: nothing is downloaded at run time, which MNIST's loaders (torchvision, keras)
all do. Task 1 is the digits as they are, task t > 1 the same images with one fixed random
permutation of the 64 pixels; a fixed split keeps 30% of the images for testing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from agents.ewc.fisher import diagonal_fisher
from agents.ewc.methods import make_consolidation
from agents.replay import Transitions
from ewc_training.run_dir import machine_description

METHODS = {
    # name: (consolidation method, lambda, dropout on the input, dropout on the hidden layers)
    "sgd": ("finetune", 0.0, 0.0, 0.0),
    "l2": ("l2", 0.003, 0.0, 0.0),
    "dropout": ("finetune", 0.0, 0.2, 0.5),  # the rates of the paper's dropout baseline (Goodfellow et al. 2013)
    "ewc": ("ewc", 100.0, 0.0, 0.0),
}
"""Each method of the figure. Each lambda is the one of a small grid with the best mean test accuracy
over the 5 tasks after the last, on seed 0 and the very test split it reports (so optimistic: no
validation split, no other seed): EWC 10, 30, 100, 300 gave 0.58, 0.61, 0.66, diverged; L2 0.003,
0.01, 0.03, 0.1 gave 0.53, 0.53, 0.47, 0.43. A check of the code, not a tuned comparison. EWC's stiffness
lambda * sum of Fishers grows with every task, and plain SGD diverges once lr * lambda * F passes 2:
at this learning rate lambda 300 does by task 4."""


@dataclass
class Settings:
    tasks: int = 5
    epochs: int = 20
    """Passes over a task's 1,257 training images (40 minibatches each)."""
    hidden: int = 400
    """Two hidden layers of this many units, as the paper's MNIST network (its Fig. 2A used 400 or more)."""
    learning_rate: float = 0.03
    batch_size: int = 32
    fisher_samples: int = 600
    seed: int = 0


class Classifier(nn.Module):
    """A fully connected network x -> logits with the interface the consolidation code reads:
    `layers` (its Linear layers, whose weights and biases are the consolidated parameters),
    `shared_parameters()`, and `forward(x, game, taps)` that records each layer's (input, output)."""

    def __init__(self, inputs: int, hidden: int, classes: int, input_dropout: float, hidden_dropout: float):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(inputs, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, classes)])
        self.dropouts = nn.ModuleList([nn.Dropout(input_dropout), nn.Dropout(hidden_dropout), nn.Dropout(hidden_dropout)])

    def forward(self, x: torch.Tensor, game: str | None = None, taps: list | None = None) -> torch.Tensor:
        for index, (layer, dropout) in enumerate(zip(self.layers, self.dropouts)):
            x = dropout(x)
            z = layer(x)
            if taps is not None:
                taps.append((x, z))
            x = torch.relu(z) if index < len(self.layers) - 1 else z
        return x

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        return {f"layers.{name}": param for name, param in self.layers.named_parameters()}


@dataclass
class Task:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def make_tasks(count: int, seed: int) -> list[Task]:
    """Task 1: the digits; task t: the same split with pixel permutation t-1 (seeded)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixels 0..16 -> 0..1
    labels = torch.tensor(digits.target, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    cut = int(0.7 * len(images))
    train, test = order[:cut], order[cut:]
    tasks = []
    for index in range(count):
        pixels = torch.arange(images.shape[1]) if index == 0 else torch.randperm(images.shape[1], generator=generator)
        permuted = images[:, pixels]
        tasks.append(Task(f"task {index + 1}", permuted[train], labels[train], permuted[test], labels[test]))
    return tasks


def accuracy(network: Classifier, task: Task) -> float:
    network.eval()
    with torch.no_grad():
        return float((network(task.test_x).argmax(dim=1) == task.test_y).float().mean())


def fisher_batches(task: Task, samples: int, batch_size: int):
    """The task's training images as the Fisher's input (only the states are read by the policy Fisher)."""
    x, y = task.train_x[:samples], task.train_y[:samples]
    for start in range(0, len(x), batch_size):
        states, targets = x[start : start + batch_size], y[start : start + batch_size]
        yield Transitions(states, targets, torch.zeros(len(targets)), torch.ones(len(targets)), states)


def train_sequence(method: str, tasks: list[Task], settings: Settings) -> np.ndarray:
    """accuracy[k, j]: test accuracy on task j after training on tasks 1..k+1 with `method`."""
    consolidation_method, strength, input_dropout, hidden_dropout = METHODS[method]
    torch.manual_seed(settings.seed)
    classes = int(tasks[0].train_y.max()) + 1
    network = Classifier(tasks[0].train_x.shape[1], settings.hidden, classes, input_dropout, hidden_dropout)
    optimizer = torch.optim.SGD(network.parameters(), lr=settings.learning_rate)
    consolidation = make_consolidation(consolidation_method, strength)
    generator = torch.Generator().manual_seed(settings.seed)
    result = np.zeros((len(tasks), len(tasks)))
    for k, task in enumerate(tasks):
        consolidation.train_on(task.name)
        network.train()
        for _ in range(settings.epochs):
            for batch in torch.randperm(len(task.train_x), generator=generator).split(settings.batch_size):
                loss = F.cross_entropy(network(task.train_x[batch]), task.train_y[batch]) + consolidation.penalty(network)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        network.eval()
        consolidation.end_game(
            task.name,
            network,
            lambda task=task: diagonal_fisher(network, fisher_batches(task, settings.fisher_samples, 200), None, "policy"),
        )
        result[k] = [accuracy(network, other) for other in tasks]
    return result


def plot(results: dict[str, np.ndarray], path: Path, command: str) -> None:
    """One panel per task: its test accuracy after each task of the sequence, one line per method;
    the command, machine and date that made it along the bottom."""
    count = len(next(iter(results.values())))
    figure = Figure(figsize=(2.6 * count, 3.0), layout="constrained")
    figure.supxlabel(
        f"{command}   ·   {machine_description()}, torch {torch.__version__}   ·   {time.strftime('%Y-%m-%d')}", fontsize=7
    )
    for j in range(count):
        axes = figure.add_subplot(1, count, j + 1)
        for method, matrix in results.items():
            axes.plot(range(j + 1, count + 1), matrix[j:, j], marker="o", label=method)
        axes.set_title(f"task {j + 1}")
        axes.set_xlabel("after task")
        axes.set_xticks(range(1, count + 1))
        axes.set_ylim(0, 1.02)
        if j == 0:
            axes.set_ylabel("test accuracy")
            axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def report(results: dict[str, np.ndarray]) -> str:
    lines = []
    for method, matrix in results.items():
        lines.append(f"{method} ({METHODS[method][0]}, lambda {METHODS[method][1]:g}): test accuracy, rows after task k")
        lines += [
            "  after " + str(k + 1) + ": " + "  ".join(f"{value:.2f}" for value in row[: k + 1]) for k, row in enumerate(matrix)
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=Settings.tasks, help="tasks in the sequence (default 5)")
    parser.add_argument("--epochs", type=int, default=Settings.epochs, help="passes over each task (default 20)")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument(
        "--out", type=Path, default=Path("permuted-digits.png"), help="the figure (default ./permuted-digits.png)"
    )
    args = parser.parse_args(argv)
    if args.tasks < 2 or args.epochs < 1:
        print("error: --tasks must be at least 2 and --epochs at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # tiny batches: one thread is as fast and never stalls on a busy machine
    settings = Settings(tasks=args.tasks, epochs=args.epochs, seed=args.seed)
    started = time.perf_counter()
    try:
        tasks = make_tasks(settings.tasks, settings.seed)
    except ImportError:
        print("error: the digits come with scikit-learn: pip install -e '.[digits]'", file=sys.stderr)
        return 2
    results = {method: train_sequence(method, tasks, settings) for method in METHODS}
    print(report(results))
    plot(results, args.out, "python -m ewc_experiments.permuted_digits " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"figure: {args.out} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
