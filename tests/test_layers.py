"""The book's layer API: same calls, same printed results, float32 and float64."""
import numpy as np
import pytest

from fastbp.layers import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss

import reference as R
from conftest import DTYPES, tol


def test_mul_add_layers_scalars():
    mul, add = MulLayer(), AddLayer()
    assert mul.forward(100, 2) == 200
    assert mul.backward(1.1) == (2.2, pytest.approx(110.0))
    assert add.forward(1, 2) == 3
    assert add.backward(1.5) == (1.5, 1.5)


def test_mul_layer_arrays():
    mul = MulLayer()
    x, y = np.arange(3.0), np.full(3, 2.0)
    np.testing.assert_array_equal(mul.forward(x, y), 2 * x)
    dx, dy = mul.backward(np.ones(3))
    np.testing.assert_array_equal(dx, y)
    np.testing.assert_array_equal(dy, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_layer_book_semantics(dtype):
    layer = Relu()
    x = np.array([[1.0, -0.5], [0.0, 3.0]], dtype)
    out = layer.forward(x)
    np.testing.assert_array_equal(out, [[1, 0], [0, 3]])
    np.testing.assert_array_equal(layer.mask, x <= 0)
    dout = np.ones_like(x)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx, [[1, 0], [0, 1]])  # x == 0: gradient 0
    np.testing.assert_array_equal(dout, 1)  # the book mutates dout; fastbp does not
    assert out.dtype == dx.dtype == dtype


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_layer(dtype):
    layer = Sigmoid()
    x = np.array([[-1e4, -1000.0, -100.0, 0.0, 2.0, 100.0, 1000.0, 1e4]], dtype)
    with np.errstate(all="raise"):
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(x))
    np.testing.assert_allclose(y, R.sigmoid_forward(x), **tol(dtype))
    np.testing.assert_allclose(dx, R.sigmoid_backward(y, 1), **tol(dtype))
    assert y[0, 0] == 0 and y[0, -1] == 1 and dx[0, 0] == dx[0, -1] == 0


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_with_loss_underflowing_probability(dtype):
    """The book's log(y + 1e-7) caps a row's loss at 16.1; the stable form gives the exact,
    finite loss when the target's probability underflows to 0."""
    layer = SoftmaxWithLoss()
    with np.errstate(all="raise"):
        loss = layer.forward(np.array([[0.0, -1e4], [500.0, 0.0]], dtype), np.array([1, 1]))
        dx = layer.backward()
    assert loss == pytest.approx((1e4 + 500.0) / 2, rel=1e-6)
    np.testing.assert_allclose(dx, [[0.5, -0.5], [0.5, -0.5]], atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_layer_nd_input_and_references(rng, dtype):
    W = rng.standard_normal((12, 5)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    layer = Affine(W, b)
    assert layer.W is W and layer.b is b  # references, never copies
    x = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    out = layer.forward(x)
    np.testing.assert_allclose(out, R.affine_forward(x.reshape(4, -1), W, b), **tol(dtype))
    dout = rng.standard_normal((4, 5)).astype(dtype)
    dx = layer.backward(dout)
    assert dx.shape == x.shape
    want_dx, want_dW, want_db = R.affine_backward(dout, x.reshape(4, -1), W)
    np.testing.assert_allclose(dx.reshape(4, -1), want_dx, **tol(dtype))
    np.testing.assert_allclose(layer.dW, want_dW, **tol(dtype))
    np.testing.assert_allclose(layer.db, want_db, **tol(dtype))
    # the book's update loop mutates W in place; the layer sees it
    W -= 0.1 * layer.dW
    np.testing.assert_allclose(layer.forward(x), R.affine_forward(x.reshape(4, -1), W, b),
                               **tol(dtype))


def test_affine_layer_casts_inputs_not_params(rng):
    W = rng.standard_normal((3, 2)).astype(np.float32)
    layer = Affine(W, np.zeros(2, np.float32))
    out = layer.forward(np.ones((2, 3)))  # float64 input, float32 layer
    assert out.dtype == np.float32 and layer.W is W


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_with_loss_onehot_and_labels(rng, dtype):
    x = rng.standard_normal((6, 4)).astype(dtype)
    labels = rng.integers(0, 4, 6)
    want_loss, want_dx = R.softmax_cross_entropy(x, labels)
    for t in (labels, np.eye(4)[labels]):
        layer = SoftmaxWithLoss()
        loss = layer.forward(x, t)
        assert loss == pytest.approx(want_loss, rel=1e-6)
        np.testing.assert_allclose(layer.backward(), want_dx, **tol(dtype))
        np.testing.assert_allclose(layer.backward(2.0), 2 * want_dx, **tol(dtype))
        np.testing.assert_allclose(layer.y.sum(axis=1), 1, rtol=1e-6)


def test_book_example_softmax_gradient():
    """The seed notes' example: output (0.3, 0.2, 0.5), target (0, 1, 0) -> (0.3, -0.8, 0.5)."""
    layer = SoftmaxWithLoss()
    layer.forward(np.log(np.array([[0.3, 0.2, 0.5]])), np.array([[0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(layer.backward(), [[0.3, -0.8, 0.5]], atol=1e-12)
