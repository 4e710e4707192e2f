"""The book's ``ch07/train_convnet.py`` on fastbp: SimpleConvNet (conv 30 filters 5x5, ReLU,
2x2 max pool, Affine 100, ReLU, Affine 10), Adam lr 0.001, batch 100, 20 epochs, with
fastbp's fused training step.

    python examples/ch07/train_convnet.py --dataset fashion-mnist
    python examples/ch07/train_convnet.py --dataset mnist-test-split   # MNIST's test split:
        # the first 8000 images train, the last 2000 test (when MNIST's training files
        # are not at hand)

Writes ``params.npz`` (``SimpleConvNet.load_params`` reads it; ``visualize_filter.py``
shows its filters) and ``train_convnet.png`` (the accuracy curves) into ``--out``.
"""
import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the figure is saved, not shown
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fastbp  # noqa: E402
from fastbp import SimpleConvNet  # noqa: E402
from fastbp.datasets import DatasetNotFoundError, load_mnist, load_split  # noqa: E402
from fastbp.trainer import Trainer  # noqa: E402


def load(name, data_dir):
    """``(x_train, t_train), (x_test, t_test)`` as (N, 1, 28, 28) float32 images."""
    if name == "mnist-test-split":
        x, t = load_split("test", dataset="mnist", flatten=False, data_dir=data_dir)
        return (x[:8000], t[:8000]), (x[8000:], t[8000:])
    return load_mnist(flatten=False, dataset=name, data_dir=data_dir)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "mnist-test-split"],
                   default="mnist")
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ and fashion-mnist/")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0, help="seed of np.random (weights, batches)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=".", help="folder for params.npz and the figure")
    p.add_argument("--quiet", action="store_true", help="no per-step loss lines")
    args = p.parse_args(argv)
    if args.threads:
        fastbp.set_num_threads(args.threads)
    try:
        (x_train, t_train), (x_test, t_test) = load(args.dataset, args.data_dir)
    except (DatasetNotFoundError, ValueError) as exc:
        print(f"train_convnet.py: error: {exc}", file=sys.stderr)
        return 2
    np.random.seed(args.seed)
    network = SimpleConvNet(input_dim=(1, 28, 28),
                            conv_param={"filter_num": 30, "filter_size": 5, "pad": 0,
                                        "stride": 1},
                            hidden_size=100, output_size=10, weight_init_std=0.01,
                            dtype=np.dtype(args.dtype))
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs,
                      mini_batch_size=args.batch_size, optimizer="Adam",
                      optimizer_param={"lr": args.lr}, evaluate_sample_num_per_epoch=1000,
                      verbose=not args.quiet)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    test_acc = network.accuracy(x_test, t_test)
    print(f"{args.dataset}: test accuracy {test_acc:.4f} on {len(t_test)} images after "
          f"{args.epochs} epochs ({trainer.max_iter} steps, {seconds:.1f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    network.save_params(out / "params.npz")
    print(f"Saved Network Parameters! ({out / 'params.npz'})")
    fig, ax = plt.subplots()
    x = np.arange(len(trainer.train_acc_list))
    ax.plot(x, trainer.train_acc_list, marker="o", label="train", markevery=2)
    ax.plot(x, trainer.test_acc_list, marker="s", label="test", markevery=2)
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.0)
    ax.legend(loc="lower right")
    fig.savefig(out / "train_convnet.png", dpi=100, bbox_inches="tight")
    print(f"figure: {out / 'train_convnet.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
