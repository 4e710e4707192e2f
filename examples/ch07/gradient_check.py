"""The book's ``ch07/gradient_check.py`` on fastbp: a small SimpleConvNet (10 filters 3x3 on
one 10x10 image, float64), backpropagation against numerical differentiation.

    python examples/ch07/gradient_check.py

Prints the mean absolute difference per parameter, as the book's script does. Elements
whose numerical gradient (central differences, h = 1e-4) crosses a ReLU or max-pool kink
differ by up to ~1e-4; all others agree to ~1e-10 (the book's own code shows the same).
"""
import numpy as np

from fastbp import SimpleConvNet


def main(seed=0):
    np.random.seed(seed)
    network = SimpleConvNet(input_dim=(1, 10, 10),
                            conv_param={"filter_num": 10, "filter_size": 3, "pad": 0,
                                        "stride": 1},
                            hidden_size=10, output_size=10, weight_init_std=0.01)
    X = np.random.rand(100).reshape((1, 1, 10, 10))
    T = np.array([1]).reshape((1, 1))
    grad_num = network.numerical_gradient(X, T)
    grad = network.gradient(X, T)
    fused = network.fused_gradient(X, T.reshape(1))
    diffs = {}
    for key, val in grad_num.items():
        diffs[key] = np.abs(val - grad[key])
        print(f"{key} mean |numerical - backprop| {diffs[key].mean():.3g}  median "
              f"{np.median(diffs[key]):.3g}   |fused - layers| "
              f"{np.abs(fused[key] - grad[key]).max():.3g}")
    return diffs


if __name__ == "__main__":
    main()
