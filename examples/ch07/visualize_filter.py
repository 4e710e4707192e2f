"""The book's ``ch07/visualize_filter.py`` on fastbp: the 30 first-layer filters of a
SimpleConvNet before training (random) and after (``params.npz`` of ``train_convnet.py``),
saved side by side as ``visualize_filter.png``.

    python examples/ch07/train_convnet.py --dataset fashion-mnist --out runs
    python examples/ch07/visualize_filter.py --params runs/params.npz --out runs

Trained filters show edge and blob detectors; random ones show noise.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the figure is saved, not shown
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fastbp import SimpleConvNet  # noqa: E402


def filter_show(fig, grid, filters, title, nx=8):
    """Draw `filters` (FN, C, FH, FW; channel 0) into `grid` (a SubplotSpec) of `fig`."""
    FN = filters.shape[0]
    ny = int(np.ceil(FN / nx))
    sub = grid.subgridspec(ny + 1, nx, hspace=0.05, wspace=0.05,
                           height_ratios=[0.4] + [1] * ny)
    head = fig.add_subplot(sub[0, :])
    head.axis("off")
    head.text(0.5, 0.2, title, ha="center", va="center", fontsize=11)
    for i in range(FN):
        ax = fig.add_subplot(sub[1 + i // nx, i % nx], xticks=[], yticks=[])
        ax.imshow(filters[i, 0], cmap=plt.cm.gray_r, interpolation="nearest")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.npz",
                   help="SimpleConvNet.save_params file (default params.npz)")
    p.add_argument("--out", default=".", help="folder for visualize_filter.png")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    np.random.seed(args.seed)
    network = SimpleConvNet()
    before = network.params["W1"].copy()  # random initial weights
    try:
        network.load_params(args.params)
    except (OSError, ValueError) as exc:
        print(f"visualize_filter.py: error: {exc}", file=sys.stderr)
        return 2
    fig = plt.figure(figsize=(12, 4.5))
    grids = fig.add_gridspec(1, 2, wspace=0.08)
    filter_show(fig, grids[0], before, "before training (random)")
    filter_show(fig, grids[1], network.params["W1"], f"after training ({args.params})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "visualize_filter.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
