"""Test accuracy of the issue-14 recipe with BatchNorm, the book's classes against fastbp's.

Fashion-MNIST, 784-100x4-10 with BatchNorm, Adam lr 0.001, batch 100, 12 000 steps (20
epochs), batches drawn with ``np.random.choice`` after ``np.random.seed(seed)`` as the book's
``Trainer`` does. The book's ``MultiLayerNetExtend`` (float64, its layer path) and fastbp's
(float32 unless ``--dtype float64``, the fused ``train_step``). Prints the test accuracy after
each of epochs 10-20: with the book's BatchNorm (running statistics with momentum 0.9), it
moves by about a point from one epoch to the next on either side.

    python benchmarks/batchnorm_accuracy.py --side book fastbp --seeds 0 1 2

Needs the book's code (``FASTBP_BOOK_REFERENCE``, default ``../shared/book-reference``) and
Fashion-MNIST (``FASTBP_DATA_DIR`` or ``--data-dir``).
"""
import argparse
import os
import sys
import time

import numpy as np

STEPS, EVERY = 12000, 600


def run(side, seed, data, dtype):
    (x_train, t_train), (x_test, t_test) = data
    np.random.seed(seed)
    if side == "book":
        from common.multi_layer_net_extend import MultiLayerNetExtend
        from common.optimizer import Adam
        net, opt = MultiLayerNetExtend(784, [100] * 4, 10, use_batchnorm=True), Adam(lr=0.001)

        def step(x, t):
            opt.update(net.params, net.gradient(x, t))
    else:
        import fastbp
        net = fastbp.MultiLayerNetExtend(784, [100] * 4, 10, use_batchnorm=True, dtype=dtype)
        opt = fastbp.optimizers.Adam(lr=0.001)
        x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)

        def step(x, t):
            net.train_step(x, t, opt)
    accs, t0 = [], time.perf_counter()
    for it in range(STEPS):
        idx = np.random.choice(x_train.shape[0], 100)
        step(x_train[idx], t_train[idx])
        if (it + 1) % EVERY == 0:
            accs.append(net.accuracy(x_test, t_test))
    print(f"{side:6} seed {seed}: test accuracy at epochs 10-20 "
          + " ".join(f"{a:.4f}" for a in accs[9:])
          + f"; final {accs[-1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", nargs="+", choices=["book", "fastbp"], default=["book", "fastbp"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    sys.path.insert(0, os.environ.get("FASTBP_BOOK_REFERENCE", os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "book-reference")))
    from fastbp.datasets import load_mnist
    data = load_mnist(dataset="fashion-mnist", data_dir=args.data_dir)
    for seed in args.seeds:
        for side in args.side:
            run(side, seed, data, np.dtype(args.dtype))


if __name__ == "__main__":
    main()
