"""The book's ch06/weight_init_compare.py on fastbp: the same 5-layer ReLU network
(784-100-100-100-100-10) with three initial weight scales, trained by SGD (lr 0.01) on the
same mini-batches of 128 images; the figure shows the smoothed training loss of each. As
in the book, with a standard deviation of 0.01 the network does not learn at all (the
signal vanishes through the layers), while Xavier's and He's initial values learn, He's
fastest.

Each step is one compiled ``network.train_step(x, t, optimizer)`` in place of the book's
``gradient`` + ``optimizer.update`` + ``loss``; the loss plotted is the batch loss the step
returns (before the update; the book computes it again after the update).

Usage (``D`` holding ``mnist/`` and/or ``fashion-mnist/``)::

    python examples/ch06/weight_init_compare.py
    python examples/ch06/weight_init_compare.py --dataset fashion-mnist --data-dir D
    python examples/ch06/weight_init_compare.py --iters 200 --out /tmp/figs
"""
import numpy as np
from _util import load, parse, parser, plt, positive, save, smooth_curve

from fastbp import MultiLayerNet
from fastbp.optimizers import SGD

p = parser(__doc__.splitlines()[0])
p.add_argument("--iters", type=positive, default=2000, help="training steps (default 2000)")
p.add_argument("--batch-size", type=positive, default=128, help="rows per step (default 128)")
args = parse(p)

((x_train, t_train), _), dataset = load(args)
np.random.seed(args.seed)
train_size = x_train.shape[0]

# weight_init_std: a standard deviation, or 'sigmoid' (Xavier: sqrt(1/n)) / 'relu' (He:
# sqrt(2/n)), n the number of inputs of the layer.
weight_init_types = {"std=0.01": 0.01, "Xavier": "sigmoid", "He": "relu"}
networks = {key: MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100],
                               output_size=10, weight_init_std=std, dtype=args.dtype)
            for key, std in weight_init_types.items()}
# The book shares one SGD between the networks; SGD keeps no state, so one per network is
# the same update (and lets each keep its fused-step bookkeeping).
optimizers = {key: SGD(lr=0.01) for key in weight_init_types}
train_loss = {key: [] for key in weight_init_types}

for i in range(args.iters):
    batch_mask = np.random.choice(train_size, args.batch_size)
    x_batch = x_train[batch_mask]
    t_batch = t_train[batch_mask]
    for key, network in networks.items():
        train_loss[key].append(network.train_step(x_batch, t_batch, optimizers[key]))
    if i % 100 == 0:
        print(f"=========== iteration: {i} ===========")
        for key in weight_init_types:
            print(f"{key}: {train_loss[key][-1]}")

markers = {"std=0.01": "o", "Xavier": "s", "He": "D"}
fig, ax = plt.subplots(figsize=(6.4, 4.8))
steps = np.arange(args.iters)
every = max(args.iters // 20, 1)
for key in weight_init_types:
    ax.plot(steps, smooth_curve(train_loss[key]), marker=markers[key], markevery=every,
            label=key)
ax.set_xlabel("iterations")
ax.set_ylabel("loss")
ax.set_ylim(0, 2.5)
ax.set_title(f"Initial weights, {dataset}: 784-100x4-10 ReLU, SGD lr 0.01")
ax.legend()
save(fig, args, __file__)
