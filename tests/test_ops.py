"""Every validation error path of fastbp.ops: the right exception, naming the argument."""
import numpy as np
import pytest

from fastbp import ops

X = np.ones((4, 3))
W = np.ones((3, 2))
B = np.ones(2)
G = np.ones((4, 2))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: ops.relu_forward(np.ones(3, int)), TypeError, "x must be float32 or float64"),
    (lambda: ops.relu_forward(np.ones(3, np.float16)), TypeError, "astype"),
    (lambda: ops.relu_forward(np.array(["a"], object)), TypeError, "x must"),
    (lambda: ops.relu_backward(X, np.ones((4, 3), np.float32)), TypeError, "dout is float32"),
    (lambda: ops.relu_backward(X, np.ones((4, 2))), ValueError, "dout must have the shape"),
    (lambda: ops.sigmoid_backward(X, np.ones((3, 3))), ValueError, "dout"),
    (lambda: ops.relu_forward(X, out=np.ones((4, 3), np.float32)), TypeError, "out must be float64"),
    (lambda: ops.relu_forward(X, out=np.ones((3, 3))), ValueError, "out must have shape"),
    (lambda: ops.relu_forward(X, out=np.ones((4, 6))[:, ::2]), ValueError, "C-contiguous"),
    (lambda: ops.relu_forward(X, out=[0]), TypeError, "numpy.ndarray"),
    (lambda: ops.affine_forward(np.ones((0, 3)), W, B), ValueError, "empty batch"),
    (lambda: ops.affine_forward(np.ones(3), W, B), ValueError, "x must be 2-D"),
    (lambda: ops.affine_forward(X, np.ones((4, 2)), B), ValueError, "W must have 3 rows"),
    (lambda: ops.affine_forward(X, W, np.ones(3)), ValueError, "b must have 2 elements"),
    (lambda: ops.affine_forward(X, W.astype(np.float32), B), TypeError, "W is float32"),
    (lambda: ops.affine_forward(X, W, B, out=X), ValueError, "out must have shape"),
    (lambda: ops.affine_backward(np.ones((4, 3)), X, W), ValueError, "dout must have the shape"),
    (lambda: ops.affine_backward(G, X, W, dW=np.ones((2, 3))), ValueError, "dW must have shape"),
    (lambda: ops.affine_backward(G, X, W, dx=G), ValueError, "dx must"),
    (lambda: ops.softmax_cross_entropy(G, [0, 1, 2, 1]), ValueError, "labels in t must be in [0, 2)"),
    (lambda: ops.softmax_cross_entropy(G, [0, -1, 0, 1]), ValueError, "[0, 2)"),
    (lambda: ops.softmax_cross_entropy(G, [0, 1]), ValueError, "one label per row"),
    (lambda: ops.softmax_cross_entropy(G, np.ones((4, 3))), ValueError, "one-hot t must have the shape"),
    (lambda: ops.softmax_cross_entropy(G, np.ones(4, bool)), TypeError, "t must hold"),
    (lambda: ops.softmax_cross_entropy(G, np.ones(4)), TypeError, "1-D t must hold integer"),
    (lambda: ops.softmax_cross_entropy(G, np.ones((4, 2, 1))), ValueError, "t must be 1-D"),
    (lambda: ops.softmax_cross_entropy(G, [0, 1, 0, 1], dx=G), ValueError, "dx must not share"),
    (lambda: ops.softmax_cross_entropy(np.ones((0, 2)), []), ValueError, "empty batch"),
    (lambda: ops.sgd_update([1.0], [1.0], 0.1), TypeError, "param must be a numpy.ndarray"),
    (lambda: ops.sgd_update(np.ones(3, int), np.ones(3), 0.1), TypeError, "param must be float"),
    (lambda: ops.sgd_update(np.ones(3), np.ones(2), 0.1), ValueError, "grad must have the shape"),
    (lambda: ops.sgd_update(np.ones(3), np.ones(3, np.float32), 0.1), TypeError, "grad is float32"),
    (lambda: ops.sgd_update(np.ones(3), np.ones(3), float("nan")), ValueError, "lr must be finite"),
    (lambda: ops.sgd_update(np.ones((3, 2))[:, 0], np.ones(3), 0.1), ValueError, "C-contiguous"),
])
def test_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_read_only_param_rejected():
    p = np.ones(3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="param is read-only"):
        ops.sgd_update(p, np.ones(3), 0.1)


def test_read_only_inputs_accepted():
    x = np.arange(6.0).reshape(2, 3) - 2
    x.flags.writeable = False
    np.testing.assert_array_equal(ops.relu_forward(x), np.maximum(x, 0))


def test_in_place_outputs():
    x = np.array([[-1.0, 2.0]])
    assert ops.relu_forward(x, out=x) is x
    np.testing.assert_array_equal(x, [[0.0, 2.0]])
    out = np.empty((4, 2))
    assert ops.affine_forward(X, W, B, out=out) is out
    np.testing.assert_array_equal(out, X @ W + B)


def test_empty_elementwise_is_fine():
    assert ops.relu_forward(np.ones((0, 3))).shape == (0, 3)
