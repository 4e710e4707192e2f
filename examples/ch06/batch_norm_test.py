"""The book's ch06/batch_norm_test.py on fastbp: a 6-layer ReLU network (784-100x5-10)
with and without Batch Normalization, trained side by side on the same mini-batches (1000
training images, batches of 100, SGD lr 0.01, 20 epochs), for 16 initial weight scales
from 1 down to 1e-4. The figure has one panel per scale with the training accuracy per
epoch of both networks. As in the book, the BatchNorm network learns fast at almost
every scale, while the plain one learns only in a narrow range of scales and not at all
when the weights start too large or too small.

Each step is one compiled ``network.train_step(x, t, optimizer)``: BatchNorm's forward
(batch statistics, running averages) and backward are fused into it.

Usage (``D`` holding ``mnist/`` and/or ``fashion-mnist/``)::

    python examples/ch06/batch_norm_test.py
    python examples/ch06/batch_norm_test.py --dataset fashion-mnist --data-dir D
    python examples/ch06/batch_norm_test.py --scales 4 --epochs 5 --out /tmp/figs
"""
import math

import numpy as np
from _util import load, parse, parser, plt, positive, save

from fastbp import MultiLayerNetExtend
from fastbp.optimizers import SGD

p = parser(__doc__.splitlines()[0])
p.add_argument("--epochs", type=positive, default=20, help="epochs per scale (default 20)")
p.add_argument("--scales", type=positive, default=16,
               help="number of weight scales, spaced logarithmically from 1 to 1e-4 "
                    "(default 16)")
p.add_argument("--train-size", type=positive, default=1000,
               help="training images kept (default 1000)")
args = parse(p)

((x_train, t_train), _), dataset = load(args)
x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
np.random.seed(args.seed)

train_size = x_train.shape[0]
batch_size = 100
learning_rate = 0.01


def train(weight_init_std):
    """Train both networks from this scale; their training accuracy per epoch."""
    bn_network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100] * 5,
                                     output_size=10, weight_init_std=weight_init_std,
                                     use_batchnorm=True, dtype=args.dtype)
    network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100] * 5, output_size=10,
                                  weight_init_std=weight_init_std, dtype=args.dtype)
    # SGD keeps no state: one per network is the book's shared optimizer.
    pairs = [(bn_network, SGD(lr=learning_rate)), (network, SGD(lr=learning_rate))]
    train_acc_list, bn_train_acc_list = [], []
    iter_per_epoch = max(train_size / batch_size, 1)
    i = 0
    while len(train_acc_list) < args.epochs:
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        for net, optimizer in pairs:
            # The plain network diverges at the largest scales (loss NaN, accuracy at
            # chance), as in the book; the step returns NaN and carries on.
            net.train_step(x_batch, t_batch, optimizer)
        if i % iter_per_epoch == 0:
            train_acc_list.append(network.accuracy(x_train, t_train))
            bn_train_acc_list.append(bn_network.accuracy(x_train, t_train))
            print(f"epoch:{len(train_acc_list) - 1} | {train_acc_list[-1]} - "
                  f"{bn_train_acc_list[-1]}")
        i += 1
    return train_acc_list, bn_train_acc_list


weight_scale_list = np.logspace(0, -4, num=args.scales)
cols = min(4, args.scales)
rows = math.ceil(args.scales / cols)
fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False,
                         sharex=True, sharey=True)
epochs = np.arange(args.epochs)
for i, w in enumerate(weight_scale_list):
    print(f"============== {i + 1}/{args.scales} ==============")
    train_acc_list, bn_train_acc_list = train(w)
    ax = axes.flat[i]
    ax.set_title(f"W:{w:.3g}", fontsize=10)
    ax.plot(epochs, bn_train_acc_list, label="Batch Normalization")
    ax.plot(epochs, train_acc_list, linestyle="--", label="Normal (without BatchNorm)")
    ax.set_ylim(0, 1.0)
for ax in axes.flat[args.scales:]:
    ax.set_visible(False)
for ax in axes[:, 0]:
    ax.set_ylabel("accuracy")
for ax in axes[-1]:
    ax.set_xlabel("epochs")
    ax.xaxis.set_tick_params(labelbottom=True)
axes.flat[args.scales - 1].legend(loc="lower right", fontsize=8)
fig.suptitle(f"Batch Normalization, {dataset}: training accuracy, {train_size} images, "
             f"784-100x5-10, SGD lr {learning_rate}")
fig.tight_layout()
save(fig, args, __file__)
