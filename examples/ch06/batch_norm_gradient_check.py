"""The book's ch06/batch_norm_gradient_check.py on fastbp: the backpropagated gradients of
a network with Batch Normalization (784-100-100-10, ReLU) against numerical ones (central
differences of the loss), on the first training image with a one-hot label. Prints the
mean absolute difference for every parameter, as the book does, and draws them as bars on
a log scale (the book's script only prints).

The gradients are the book's layer-by-layer ``network.gradient`` (fastbp's layers) and
``network.numerical_gradient``, in float64 (central differences need it).

What to expect, as with the book's own code: with the book's batch of one image,
BatchNorm normalizes every unit over a batch of one, so each BatchNorm output is its shift
``beta`` and the loss does not depend on the weights before the last BatchNorm: most
gradients are exactly 0 on both sides. One difference is large, that of the last
BatchNorm's ``beta`` (``beta2``): ``beta`` starts at 0, which puts the following ReLU
exactly at its kink, where backpropagation takes the slope 0 (the book's ``x <= 0`` mask)
and the central difference half the slope. With ``--batch-size 10`` every gradient is
non-trivial and every difference at rounding level (about 1e-10; the book's code gives
about 1e-7 there, from its ``log(y + 1e-7)``).

Usage (``D`` holding ``mnist/`` and/or ``fashion-mnist/``)::

    python examples/ch06/batch_norm_gradient_check.py
    python examples/ch06/batch_norm_gradient_check.py --dataset fashion-mnist --data-dir D
    python examples/ch06/batch_norm_gradient_check.py --hidden 20 20 --batch-size 10 --out /tmp/figs
"""
import numpy as np
from _util import load, parse, parser, plt, positive, save

from fastbp import MultiLayerNetExtend

p = parser(__doc__.splitlines()[0], dtype=False)
p.add_argument("--hidden", type=positive, nargs="+", default=[100, 100], metavar="H",
               help="hidden layer widths (default 100 100; smaller checks faster)")
p.add_argument("--batch-size", type=positive, default=1,
               help="training images in the batch (default 1, the book's; see above)")
args = parse(p)

((x_train, t_train), _), dataset = load(args, one_hot_label=True)
np.random.seed(args.seed)

network = MultiLayerNetExtend(input_size=784, hidden_size_list=args.hidden, output_size=10,
                              use_batchnorm=True)
x_batch = x_train[:args.batch_size]
t_batch = t_train[:args.batch_size]

grad_backprop = network.gradient(x_batch, t_batch)
grad_numerical = network.numerical_gradient(x_batch, t_batch)

diffs = {}
for key in grad_numerical:
    diffs[key] = float(np.average(np.abs(grad_backprop[key] - grad_numerical[key])))
    print(f"{key}:{diffs[key]}")

fig, ax = plt.subplots(figsize=(max(6.4, 0.55 * len(diffs)), 4.2))
keys = list(diffs)
# A log axis shows differences spanning many decades; an exact 0 has no bar, only its label.
floor = 1e-20
bars = ax.bar(keys, [max(diffs[k], floor) for k in keys], color="tab:blue")
ax.bar_label(bars, labels=[f"{diffs[k]:.0e}" if diffs[k] else "0" for k in keys], fontsize=8)
ax.set_yscale("log")
ax.set_ylim(floor, 1e3)
ax.axhline(1e-6, color="tab:red", linestyle="--", label="1e-6")
ax.set_ylabel("mean |backprop - numerical|")
ax.set_xlabel("parameter")
ax.tick_params(axis="x", labelrotation=45)
sizes = "-".join(map(str, [784, *args.hidden, 10]))
ax.set_title(f"BatchNorm gradient check, {dataset}: {sizes}, batch {args.batch_size}")
ax.legend(loc="upper left")
save(fig, args, __file__)
