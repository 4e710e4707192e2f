"""The book's gradient check (chapter 5.7.3): backprop against numerical gradients.

Uses the first three real MNIST test images when fastbp can find them locally (see
``fastbp.datasets``; nothing is downloaded), else a seeded random batch of the same shape.
"""
import numpy as np

from fastbp import TwoLayerNet, gradient_check


def batch():
    try:
        from fastbp.datasets import load_split
        x, t = load_split("test", normalize=True, one_hot_label=True, download=False)
        return x[:3], t[:3], "MNIST"
    except (FileNotFoundError, OSError, ValueError):  # no data here: the check still runs
        rng = np.random.default_rng(0)
        return rng.random((3, 784)), np.eye(10)[rng.integers(0, 10, 3)], "random"


x_batch, t_batch, source = batch()
network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10, seed=0)
# The book prints 4e-10 .. 1.4e-7; fastbp's differences are smaller because its loss is the
# exact log-softmax, consistent with the analytic gradient, where the book's log(y + 1e-7)
# shifts the loss by up to 1e-7 against its own gradient.
print(f"# mean |backprop - numerical| per parameter, 3 {source} images")
for key, diff in gradient_check(network, x_batch, t_batch).items():
    print(key + ":" + str(diff))
