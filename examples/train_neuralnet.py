"""The book's ch05/train_neuralnet.py, on fastbp.

Same recipe and the same printout as the book's script (train and test
accuracy once per epoch), but each step is one compiled ``train_step`` call
(forward, backward and SGD update fused) instead of ``gradient`` plus a Python
update loop. For the library version with checkpoints and timings see
``fastbp.train.train`` and the ``fastbp train`` command.

Usage::

    python examples/train_neuralnet.py                        # MNIST (downloads if needed)
    python examples/train_neuralnet.py --dataset fashion-mnist --data-dir ../shared/datasets
"""

import argparse

import numpy as np

from fastbp import TwoLayerNet
from fastbp.datasets import load_mnist

parser = argparse.ArgumentParser(description="The book's train_neuralnet.py on fastbp")
parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
parser.add_argument("--data-dir", default=None, help="folder holding mnist/ and/or fashion-mnist/")
args = parser.parse_args()

# The book loads one-hot labels here; train_step accepts them as they are.
(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, one_hot_label=True, dataset=args.dataset,
                                                  data_dir=args.data_dir)

network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10, dtype=np.float32)

iters_num = 10000
train_size = x_train.shape[0]
batch_size = 100
learning_rate = 0.1

train_loss_list = []
train_acc_list = []
test_acc_list = []

iter_per_epoch = max(train_size / batch_size, 1)

for i in range(iters_num):
    batch_mask = np.random.choice(train_size, batch_size)
    x_batch = x_train[batch_mask]
    t_batch = t_train[batch_mask]

    # The book: grad = network.gradient(...); params[key] -= learning_rate * grad[key];
    # loss = network.loss(...). Here: one call, returning the loss before the update.
    loss = network.train_step(x_batch, t_batch, learning_rate)
    train_loss_list.append(loss)

    if i % iter_per_epoch == 0:
        train_acc = network.accuracy(x_train, t_train)
        test_acc = network.accuracy(x_test, t_test)
        train_acc_list.append(train_acc)
        test_acc_list.append(test_acc)
        print(train_acc, test_acc)
