"""The book's ch06/overfit_dropout.py on fastbp: the overfitting 7-layer network
(784-100x6-10, ReLU, 300 training images) with Dropout (ratio 0.2) after every hidden
layer, trained by the book's ``Trainer`` (301 epochs of 3 steps of 100 images, SGD lr
0.01). The figure shows training and test accuracy per epoch. As in the book, Dropout
keeps the two closer together than without it (``--no-dropout`` shows the overfitting:
training accuracy reaches 100 %), and both rise more slowly.

:class:`fastbp.trainer.Trainer` has the book's API and runs each step as one compiled
``network.train_step(x, t, optimizer)``; Dropout's masks then come from fastbp's own
counter-based generator (seeded from ``np.random``), not from ``np.random.rand``.

Usage (``D`` holding ``mnist/`` and/or ``fashion-mnist/``)::

    python examples/ch06/overfit_dropout.py
    python examples/ch06/overfit_dropout.py --dataset fashion-mnist --data-dir D
    python examples/ch06/overfit_dropout.py --no-dropout --epochs 51 --quiet --out /tmp/figs
"""
import numpy as np
from _util import load, parse, parser, plt, positive, save

from fastbp import MultiLayerNetExtend
from fastbp.trainer import Trainer

p = parser(__doc__.splitlines()[0])
p.add_argument("--epochs", type=positive, default=301, help="epochs (default 301)")
p.add_argument("--dropout-ratio", type=float, default=0.2, metavar="R",
               help="fraction of hidden units dropped in training (default 0.2)")
p.add_argument("--no-dropout", dest="use_dropout", action="store_false",
               help="train the same network without Dropout")
p.add_argument("--train-size", type=positive, default=300,
               help="training images kept (default 300, few enough to overfit)")
p.add_argument("--quiet", action="store_true",
               help="do not print the Trainer's line per step and per epoch")
args = parse(p)

((x_train, t_train), (x_test, t_test)), dataset = load(args)
x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
np.random.seed(args.seed)

network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100] * 6, output_size=10,
                              use_dropout=args.use_dropout, dropout_ration=args.dropout_ratio,
                              dtype=args.dtype)
trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs,
                  mini_batch_size=100, optimizer="sgd", optimizer_param={"lr": 0.01},
                  verbose=not args.quiet)
trainer.train()

train_acc_list, test_acc_list = trainer.train_acc_list, trainer.test_acc_list
fig, ax = plt.subplots(figsize=(6.4, 4.8))
epochs = np.arange(len(train_acc_list))
every = max(len(train_acc_list) // 30, 1)
ax.plot(epochs, train_acc_list, marker="o", label="train", markevery=every)
ax.plot(epochs, test_acc_list, marker="s", label="test", markevery=every)
ax.set_xlabel("epochs")
ax.set_ylabel("accuracy")
ax.set_ylim(0, 1.0)
what = f"Dropout {args.dropout_ratio:g}" if args.use_dropout else "no Dropout"
ax.set_title(f"{what}, {dataset}, {x_train.shape[0]} training images")
ax.legend(loc="lower right")
save(fig, args, __file__)
