"""The book's gradient check (chapter 5.7.3): backprop against numerical gradients.

Uses real MNIST test images when fastbp can find them (see ``fastbp.datasets``), else a
seeded random batch of the same shape.
"""
import numpy as np

from fastbp import TwoLayerNet, gradient_check


def batch():
    try:
        from fastbp.datasets import load_mnist
        (x, t), _ = load_mnist(normalize=True, one_hot_label=True, download=False)
        return x[:3], t[:3], "MNIST"
    except Exception:  # no data here: the check itself does not need real images
        rng = np.random.default_rng(0)
        return rng.random((3, 784)), np.eye(10)[rng.integers(0, 10, 3)], "random"


x_batch, t_batch, source = batch()
network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10, seed=0)
print(f"# mean |backprop - numerical| per parameter, 3 {source} images")
for key, diff in gradient_check(network, x_batch, t_batch).items():
    print(key + ":" + str(diff))
