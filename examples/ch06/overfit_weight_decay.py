"""The book's ch06/overfit_weight_decay.py on fastbp: a 7-layer network
(784-100x6-10, ReLU) trained on only 300 images overfits; L2 weight decay (lambda 0.1)
narrows the gap between training and test accuracy. The figure shows both accuracies
per epoch (3 steps of 100 images, SGD lr 0.01, 201 epochs). As in the book, with the decay
the training accuracy stays below 100 % and the gap to the test accuracy is smaller than
without it (``--weight-decay 0`` shows the overfitting: training accuracy reaches 100 %).

Each step is one compiled ``network.train_step(x, t, optimizer)``: the decay's gradient
``lambda * W`` is folded into the update inside it.

Usage (``D`` holding ``mnist/`` and/or ``fashion-mnist/``)::

    python examples/ch06/overfit_weight_decay.py
    python examples/ch06/overfit_weight_decay.py --dataset fashion-mnist --data-dir D
    python examples/ch06/overfit_weight_decay.py --weight-decay 0 --epochs 51 --out /tmp/figs
"""
import numpy as np
from _util import load, parse, parser, plt, positive, save

from fastbp import MultiLayerNet
from fastbp.optimizers import SGD

p = parser(__doc__.splitlines()[0])
p.add_argument("--epochs", type=positive, default=201, help="epochs (default 201)")
p.add_argument("--weight-decay", type=float, default=0.1, metavar="LAMBDA",
               help="weight decay lambda (default 0.1; 0: none)")
p.add_argument("--train-size", type=positive, default=300,
               help="training images kept (default 300, few enough to overfit)")
args = parse(p)

((x_train, t_train), (x_test, t_test)), dataset = load(args)
x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
np.random.seed(args.seed)

network = MultiLayerNet(input_size=784, hidden_size_list=[100] * 6, output_size=10,
                        weight_decay_lambda=args.weight_decay, dtype=args.dtype)
optimizer = SGD(lr=0.01)

train_size = x_train.shape[0]
batch_size = 100
iter_per_epoch = max(train_size / batch_size, 1)
train_acc_list = []
test_acc_list = []

i = 0
while len(train_acc_list) < args.epochs:
    batch_mask = np.random.choice(train_size, batch_size)
    network.train_step(x_train[batch_mask], t_train[batch_mask], optimizer)
    if i % iter_per_epoch == 0:  # the book's test: after steps 1, 4, 7, ... (epoch starts)
        train_acc_list.append(network.accuracy(x_train, t_train))
        test_acc_list.append(network.accuracy(x_test, t_test))
        print(f"epoch:{len(train_acc_list) - 1}, train acc:{train_acc_list[-1]}, "
              f"test acc:{test_acc_list[-1]}")
    i += 1

fig, ax = plt.subplots(figsize=(6.4, 4.8))
epochs = np.arange(args.epochs)
every = max(args.epochs // 20, 1)
ax.plot(epochs, train_acc_list, marker="o", label="train", markevery=every)
ax.plot(epochs, test_acc_list, marker="s", label="test", markevery=every)
ax.set_xlabel("epochs")
ax.set_ylabel("accuracy")
ax.set_ylim(0, 1.0)
ax.set_title(f"Weight decay lambda={args.weight_decay:g}, {dataset}, "
             f"{train_size} training images")
ax.legend(loc="lower right")
save(fig, args, __file__)
