"""3D Tetris (Tensor Field Networks' toy problem): train on the 8 shapes in one orientation, test on 1,000
random rotations.

    python examples/tetris.py            # a few seconds on one CPU core

The model keeps O(3) parity (``pseudo=True``): its graph output is ``7x0e + 1x0o``. The two chiral shapes
share the first scalar logit and are told apart by the pseudo-scalar ``p``: ``logit_a = s + p``,
``logit_b = s - p``. A reflection flips ``p`` and therefore swaps the predictions of the chiral pair, which the
script checks on the whole rotated test set.
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

import torch

from escn.data import collate
from escn.datasets.tetris import TETRIS_NAMES, random_rotation_test_set, tetris_graphs
from escn.models import ESCN


def build_model(seed: int = 0) -> ESCN:
    """The task model: 3 layers (a pseudo-scalar needs three), l <= 2, 8 channels."""
    torch.manual_seed(seed)
    return ESCN(
        num_atom_types=1,
        lmax=2,
        mmax=2,
        channels=8,
        num_layers=3,
        cutoff=4.0,
        avg_num_neighbors=3.0,
        pseudo=True,
        outputs=["graph_outputs"],
        graph_output_irreps="7x0e+1x0o",
    )


def logits(model: ESCN, batch) -> torch.Tensor:
    """(B, 8) class logits from the (B, 8) graph outputs ``[s0..s6, p]``."""
    y = model(batch)["graph_outputs"]
    s, p = y[:, :7], y[:, 7:]
    return torch.cat([s[:, :1] + p, s[:, :1] - p, s[:, 1:]], dim=1)


def train(steps: int = 300, lr: float = 1e-2, seed: int = 0, dtype: torch.dtype = torch.float64) -> ESCN:
    """Full-batch training on the 8 unrotated shapes with cross-entropy."""
    model = build_model(seed).to(dtype)
    batch = collate(tetris_graphs(dtype=dtype)).with_radius_graph(model.cutoff)
    labels = batch.graph_attrs["label"]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(logits(model, batch), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-4:
            break
    return model.eval()


@torch.no_grad()
def evaluate(model: ESCN, n_test: int = 1000, seed: int = 1, dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """Accuracy on ``n_test`` random rotations, and on their mirror images (labels of the chiral pair swapped)."""
    test = collate(random_rotation_test_set(n_test, seed=seed, dtype=dtype)).with_radius_graph(model.cutoff)
    labels = test.graph_attrs["label"]
    pred = logits(model, test).argmax(dim=1)
    mirrored = collate(random_rotation_test_set(n_test, seed=seed, dtype=dtype)).with_radius_graph(model.cutoff)
    mirrored.pos = -mirrored.pos
    swap = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])
    pred_m = logits(model, mirrored).argmax(dim=1)
    return {
        "test_accuracy": (pred == labels).double().mean().item(),
        "mirror_accuracy": (pred_m == swap[labels]).double().mean().item(),
        "train_accuracy": (
            logits(model, collate(tetris_graphs(dtype=dtype)).with_radius_graph(model.cutoff)).argmax(1)
            == torch.arange(8)
        )
        .double()
        .mean()
        .item(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="maximum training steps (stops early at loss < 1e-4)")
    parser.add_argument("--test", type=int, default=1000, help="number of randomly rotated test shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the graphs are tiny: 1 is fastest)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = train(args.steps, seed=args.seed)
    metrics = evaluate(model, args.test)
    metrics["seconds"] = time.perf_counter() - t0
    print(f"tetris: {len(TETRIS_NAMES)} shapes, trained in one orientation, tested on {args.test} random rotations")
    print(f"{'metric':<28}{'escn':>10}{'reference':>12}")
    print(f"{'train accuracy':<28}{metrics['train_accuracy']:>10.1%}{'100%':>12}")
    print(f"{'rotated test accuracy':<28}{metrics['test_accuracy']:>10.1%}{'100% (TFN)':>12}")
    print(f"{'mirrored test accuracy':<28}{metrics['mirror_accuracy']:>10.1%}{'100%':>12}")
    print(f"{'wall time (s)':<28}{metrics['seconds']:>10.1f}")
    return metrics


if __name__ == "__main__":
    main()
