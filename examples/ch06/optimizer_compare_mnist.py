"""The book's ch06/optimizer_compare_mnist.py on fastbp: SGD, Momentum, AdaGrad and Adam
training the same 5-layer network (784-100-100-100-100-10, ReLU, He's initial weights) on
the same mini-batches of 128 images; the figure shows the smoothed training loss of each
against the step. As in the book, plain SGD learns slowest and the other three faster.

Each step is one compiled ``network.train_step(x, t, optimizer)`` (forward, backward and
the optimizer's update fused) in place of the book's ``gradient`` + ``optimizer.update``
+ ``loss``. The loss plotted is the one the step returns: the batch loss before the
update, where the book computes it again after the update (the curves are the same up
to a shift of one step).

Usage (``D`` holding ``mnist/`` and/or ``fashion-mnist/``)::

    python examples/ch06/optimizer_compare_mnist.py
    python examples/ch06/optimizer_compare_mnist.py --dataset fashion-mnist --data-dir D
    python examples/ch06/optimizer_compare_mnist.py --iters 200 --out /tmp/figs
"""
import numpy as np
from _util import load, parse, parser, plt, positive, save, smooth_curve

from fastbp import MultiLayerNet
from fastbp.optimizers import SGD, AdaGrad, Adam, Momentum

p = parser(__doc__.splitlines()[0])
p.add_argument("--iters", type=positive, default=2000, help="training steps (default 2000)")
p.add_argument("--batch-size", type=positive, default=128, help="rows per step (default 128)")
args = parse(p)

((x_train, t_train), _), dataset = load(args)
np.random.seed(args.seed)
train_size = x_train.shape[0]

# The book's defaults: SGD(lr=0.01), Momentum(0.01, 0.9), AdaGrad(0.01), Adam(0.001).
optimizers = {"SGD": SGD(), "Momentum": Momentum(), "AdaGrad": AdaGrad(), "Adam": Adam()}
networks = {key: MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100],
                               output_size=10, dtype=args.dtype)
            for key in optimizers}
train_loss = {key: [] for key in optimizers}

for i in range(args.iters):
    batch_mask = np.random.choice(train_size, args.batch_size)
    x_batch = x_train[batch_mask]
    t_batch = t_train[batch_mask]
    for key, optimizer in optimizers.items():
        train_loss[key].append(networks[key].train_step(x_batch, t_batch, optimizer))
    if i % 100 == 0:
        print(f"=========== iteration: {i} ===========")
        for key in optimizers:
            print(f"{key}: {train_loss[key][-1]}")

markers = {"SGD": "o", "Momentum": "x", "AdaGrad": "s", "Adam": "D"}
fig, ax = plt.subplots(figsize=(6.4, 4.8))
steps = np.arange(args.iters)
every = max(args.iters // 20, 1)
for key in optimizers:
    ax.plot(steps, smooth_curve(train_loss[key]), marker=markers[key], markevery=every,
            label=key)
ax.set_xlabel("iterations")
ax.set_ylabel("loss")
ax.set_ylim(0, 1)
ax.set_title(f"Update methods, {dataset}: 784-100x4-10, batch {args.batch_size}")
ax.legend()
save(fig, args, __file__)
