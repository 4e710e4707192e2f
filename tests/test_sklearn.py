"""fastbp.sklearn.MLPClassifier: scikit-learn's estimator checks, side by side with
scikit-learn's MLPClassifier, and the kernels added for it (tanh, the logistic output, the
gradient scale, the epoch loop)."""
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLP  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp import MultiLayerNet, kernels as K  # noqa: E402
from fastbp.kernels import mlp as KM, rows as KR  # noqa: E402
from fastbp.optimizers import SGD, Adam  # noqa: E402
from fastbp.sklearn import MLPClassifier  # noqa: E402

from conftest import DTYPES, tol  # noqa: E402

quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(400, 12, n_informative=8, n_classes=3, random_state=0)
    return X, y


# -- scikit-learn's own checks ---------------------------------------------------------------

@quiet
@parametrize_with_checks([MLPClassifier()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- side by side with scikit-learn --------------------------------------------------------

def _both(X, y, **kw):
    out = []
    for cls in (SkMLP, MLPClassifier):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            out.append(cls(random_state=3, max_iter=30, **kw).fit(X, y))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [
    dict(),
    dict(activation="tanh", alpha=0.01),
    dict(activation="logistic", batch_size=64),
    dict(activation="identity", shuffle=False),
    dict(solver="sgd", learning_rate_init=0.05),
    dict(solver="sgd", learning_rate_init=0.05, nesterovs_momentum=False),
    dict(solver="sgd", learning_rate_init=0.05, momentum=0.0,
         learning_rate="invscaling", power_t=0.25),
    dict(hidden_layer_sizes=(20, 20, 20), epsilon=1e-5, beta_1=0.8),
], ids=str)
def test_same_training_as_sklearn(data, dtype, kw):
    # Same initial weights, shuffles and arithmetic: the loss curves agree to rounding.
    X, y = data
    X = X.astype(dtype)
    sk, fb = _both(X, y, **kw)
    assert fb.coefs_[0].dtype == dtype and fb.predict_proba(X).dtype == dtype
    assert fb.n_iter_ == sk.n_iter_ and fb.t_ == sk.t_
    rtol = 2e-3 if dtype == np.float32 else 1e-7
    np.testing.assert_allclose(fb.loss_curve_, sk.loss_curve_, rtol=rtol)
    for a, b in zip(fb.coefs_ + fb.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert abs(fb.score(X, y) - sk.score(X, y)) <= 0.01
    np.testing.assert_allclose(fb.predict_proba(X), sk.predict_proba(X), atol=10 * rtol)


@pytest.mark.parametrize("kw", [dict(), dict(solver="sgd", learning_rate_init=0.05),
                                dict(early_stopping=True, n_iter_no_change=2, tol=1e-3)],
                         ids=str)
def test_sample_weight_as_sklearn(data, kw):
    X, y = data
    w = np.random.default_rng(5).random(len(y)) * 3
    w[:20] = 0
    out = []
    for cls in (SkMLP, MLPClassifier):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            out.append(cls(random_state=3, max_iter=15, alpha=0.01, **kw).fit(X, y, w))
    sk, fb = out
    assert fb.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(fb.loss_curve_, sk.loss_curve_, rtol=1e-7)
    if sk.validation_scores_ is not None:
        np.testing.assert_allclose(fb.validation_scores_, sk.validation_scores_)
    np.testing.assert_allclose(fb.coefs_[0], sk.coefs_[0], rtol=1e-6, atol=1e-9)


def test_early_stopping_as_sklearn(data):
    X, y = data
    sk, fb = _both(X, y, early_stopping=True, n_iter_no_change=3, tol=1e-3,
                   learning_rate_init=0.01)
    assert sk.n_iter_ < 30  # it did stop early
    assert fb.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(fb.validation_scores_, sk.validation_scores_)
    assert fb.best_validation_score_ == sk.best_validation_score_ and fb.best_loss_ is None
    # the best epoch's weights are restored
    np.testing.assert_allclose(fb.coefs_[0], sk.coefs_[0], rtol=1e-7, atol=1e-9)


def test_tol_stopping_and_adaptive_as_sklearn(data):
    X, y = data
    for kw in (dict(tol=0.05, n_iter_no_change=2),
               dict(solver="sgd", learning_rate="adaptive", tol=0.05, n_iter_no_change=1,
                    learning_rate_init=0.1)):
        sk, fb = _both(X, y, **kw)
        assert fb.n_iter_ == sk.n_iter_ < 30
        np.testing.assert_allclose(fb.loss_curve_, sk.loss_curve_, rtol=1e-7)
        assert fb.best_loss_ == pytest.approx(sk.best_loss_)


@pytest.mark.parametrize("kind", ["binary-str", "multilabel"])
def test_logistic_outputs_as_sklearn(data, kind):
    X, y = data
    if kind == "binary-str":
        y = np.where(y == 1, "yes", "no")
    else:
        y = np.stack([y == 0, y == 1, y == 2, (y == 1) | (X[:, 0] > 0)], axis=1).astype(int)
    sk, fb = _both(X, y, alpha=0.001)
    assert fb.out_activation_ == sk.out_activation_ == "logistic"
    assert fb.n_outputs_ == sk.n_outputs_
    np.testing.assert_array_equal(fb.classes_, sk.classes_)
    np.testing.assert_allclose(fb.loss_curve_, sk.loss_curve_, rtol=1e-7)
    np.testing.assert_array_equal(fb.predict(X), sk.predict(X))
    np.testing.assert_allclose(fb.predict_log_proba(X), sk.predict_log_proba(X), atol=1e-7)


def test_partial_fit_and_warm_start_as_sklearn(data):
    X, y = data
    models = []
    for cls in (SkMLP, MLPClassifier):
        m = cls(random_state=0)
        for i in range(3):
            m.partial_fit(X[i * 100:(i + 1) * 100], y[i * 100:(i + 1) * 100],
                          classes=np.unique(y))
        m2 = cls(random_state=0, warm_start=True, max_iter=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m2.fit(X, y).fit(X, y)
        models.append((m, m2))
    (sk, sk2), (fb, fb2) = models
    assert fb.t_ == sk.t_ == 300 and fb.n_iter_ == sk.n_iter_ == 1
    np.testing.assert_allclose(fb.loss_curve_, sk.loss_curve_, rtol=1e-7)
    np.testing.assert_allclose(fb2.loss_curve_, sk2.loss_curve_, rtol=1e-7)
    with pytest.raises(ValueError, match="classes not in"):
        fb.partial_fit(X[:5], np.full(5, 7))
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.unique(y))


# -- the scikit-learn toolbox ----------------------------------------------------------------

@quiet
def test_clone_pipeline_gridsearch_pickle(data):
    X, y = data
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.01,
                        random_state=0)
    assert clone(est).get_params() == est.get_params()
    pipe = make_pipeline(StandardScaler(), est)
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_score_ > 0.7
    fitted = grid.best_estimator_
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    # the unpickled model keeps training from the same state as the original
    a = fitted[-1].partial_fit(fitted[0].transform(X), y)
    b = again[-1].partial_fit(again[0].transform(X), y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])


def test_coefs_assigned_by_the_user_are_used(data):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fb = MLPClassifier(max_iter=5, random_state=0).fit(X, y)
        sk = SkMLP(max_iter=5, random_state=1).fit(X, y)
    fb.coefs_ = [c.copy() for c in sk.coefs_]
    fb.intercepts_ = [b.copy() for b in sk.intercepts_]
    np.testing.assert_allclose(fb.predict_proba(X), sk.predict_proba(X), atol=1e-12)


def test_bad_input(data):
    X, y = data
    with pytest.raises(ValueError, match="lbfgs"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    with pytest.raises(ValueError, match="activation"):
        MLPClassifier(activation="softplus").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(10, 0)).fit(X, y)
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="[Ss]parse"):
        MLPClassifier().fit(scipy_sparse.csr_matrix(X), y)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MLPClassifier().fit(Xn, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fb = MLPClassifier(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        fb.predict(X[:, :5])
    with pytest.raises(ValueError, match="non-finite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MLPClassifier(solver="sgd", max_iter=3, learning_rate_init=1e10).fit(X * 1e20, y)


# -- the kernels added for the estimator -----------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [3, 70000])  # serial and parallel twins
def test_tanh_kernels(rng, dtype, n):
    x = (3 * rng.standard_normal(n)).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    y = np.empty_like(x)
    K.tanh_forward(x, y)
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), **tol(dtype))
    dx = np.empty_like(x)
    K.tanh_backward(y, g, dx)
    np.testing.assert_allclose(dx, g * (1 - y.astype(np.float64) ** 2), **tol(dtype))


def _reference_logistic(z, t, scale):
    z = z.astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    loss = -(t * np.log(p) + (1 - t) * np.log1p(-p)).sum(axis=1)
    return loss, (p - t) * scale / z.shape[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 600])
def test_logistic_output_rows(rng, dtype, n):
    C = 4
    y = (2 * rng.standard_normal((n, C))).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    t = (rng.random((n, C)) < 0.4).astype(dtype)
    z = y + b
    dy = np.empty_like(y)
    row_loss = np.empty(n)
    KR.output_rows(y, b, t, dy, row_loss, KR.LOGISTIC_CE, 3.0)
    want_loss, want_dy = _reference_logistic(z, t, 3.0)
    np.testing.assert_allclose(row_loss, want_loss, rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(dy, want_dy, **tol(dtype))
    # huge logits: finite loss, no overflow
    y = np.array([[1e4, -1e4, 0.0, 50.0]], dtype)
    t = np.array([[0.0, 1.0, 1.0, 1.0]], dtype)
    dy = np.empty_like(y)
    row_loss = np.empty(1)
    KR.output_rows(y, np.zeros(4, dtype), t, dy, row_loss, KR.LOGISTIC_CE, 1.0)
    assert np.isfinite(row_loss).all() and row_loss[0] == pytest.approx(2e4 + np.log(2), rel=1e-6)


def _reference_net(net, x, t):
    """Loss of a fused-only MultiLayerNet in plain NumPy (float64)."""
    act = {"relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
           "tanh": np.tanh, "identity": lambda v: v}[net.activation]
    a = x.astype(np.float64)
    L = net.hidden_layer_num + 1
    for i in range(1, L + 1):
        a = a @ net.params[f"W{i}"] + net.params[f"b{i}"]
        if i < L:
            a = act(a)
    if net.output == "logistic":
        loss = _reference_logistic(a, t, 1.0)[0].mean()
    else:
        z = a - a.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -logp[np.arange(len(t)), t].mean()
    W2 = sum((net.params[f"W{i}"].astype(np.float64) ** 2).sum() for i in range(1, L + 1))
    return loss + 0.5 * net.weight_decay_lambda * W2


@pytest.mark.parametrize("activation", ["tanh", "identity", "sigmoid", "relu"])
@pytest.mark.parametrize("output", ["softmax", "logistic"])
def test_fused_gradient_new_activations_and_output(rng, activation, output):
    # Central differences in float64 against the fused gradient (n = 30 > SMALL_BATCH:
    # BLAS path; n = 5: the listed first layer).
    for n in (5, 30):
        net = MultiLayerNet(6, [5, 4], 3, activation, 0.5, 0.01, seed=1, fused_only=True,
                            output=output)
        x = rng.standard_normal((n, 6))
        x[x < -0.8] = 0
        t = rng.integers(0, 3, n)
        if output == "logistic":
            t = (rng.random((n, 3)) < 0.5).astype(np.float64)
        got = net.fused_gradient(x, t)
        h = 1e-6
        for key, p in net.params.items():
            num = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + h
                up = _reference_net(net, x, t)
                p[idx] = old - h
                down = _reference_net(net, x, t)
                p[idx] = old
                num[idx] = (up - down) / (2 * h)
            np.testing.assert_allclose(got[key], num, rtol=1e-5, atol=1e-8, err_msg=key)


def test_grad_scale_and_epoch_loop_match_steps(rng):
    # One epoch of train_epoch = the same batches through train_step, with alpha/rows as
    # weight decay; the Adam epsilon of adam_epsilon = the gradients scaled by 1e-7/eps.
    x = rng.standard_normal((23, 6))
    t = rng.integers(0, 3, 23)
    order = rng.permutation(23)
    a = MultiLayerNet(6, [5], 3, seed=2, fused_only=True)
    b = MultiLayerNet(6, [5], 3, seed=2, fused_only=True)
    oa, ob = Adam(lr=0.01), Adam(lr=0.01)
    mean = a.train_epoch(x, t, oa, 10, order=order, alpha=0.3, adam_epsilon=1e-7)
    losses = []
    for lo in range(0, 23, 10):
        rows = order[lo:lo + 10]
        b.weight_decay_lambda = 0.3 / len(rows)
        losses.append(b.train_step(x[rows], t[rows], ob) * len(rows))
    assert oa.iter == ob.iter == 3
    assert mean == pytest.approx(sum(losses) / 23, rel=1e-12)
    for key in a.params:
        np.testing.assert_allclose(a.params[key], b.params[key], rtol=1e-12, atol=1e-14)
    # epsilon 1e-8 is not epsilon 1e-7
    c = MultiLayerNet(6, [5], 3, seed=2, fused_only=True)
    c.train_epoch(x, t, Adam(lr=0.01), 10, order=order, alpha=0.3, adam_epsilon=1e-8)
    assert not np.allclose(c.params["W1"], a.params["W1"], rtol=1e-9, atol=0)
    # SGD: unchanged by adam_epsilon
    s1 = MultiLayerNet(6, [5], 3, seed=2, fused_only=True)
    s2 = MultiLayerNet(6, [5], 3, seed=2, fused_only=True)
    s1.train_epoch(x, t, SGD(lr=0.1), 10, adam_epsilon=1e-3)
    s2.train_epoch(x, t, SGD(lr=0.1), 10)
    np.testing.assert_array_equal(s1.params["W1"], s2.params["W1"])


def test_fused_only_network_refuses_the_layer_path():
    net = MultiLayerNet(4, [3], 2, "tanh", fused_only=True, seed=0)
    for call in (lambda: net.predict(np.ones((1, 4))),
                 lambda: net.gradient(np.ones((1, 4)), np.array([0])),
                 lambda: net.loss(np.ones((1, 4)), np.array([0]))):
        with pytest.raises(NotImplementedError, match="fused_only"):
            call()
    with pytest.raises(ValueError, match="activation"):
        MultiLayerNet(4, [3], 2, "tanh")  # the book's constructor is unchanged
    with pytest.raises(ValueError, match="output"):
        MultiLayerNet(4, [3], 2, output="logistic")
    assert KM.mlp_step is not KM.mlp_train_step
