"""A scikit-learn estimator on fastbp's fused training step: :class:`MLPClassifier`.

A drop-in for :class:`sklearn.neural_network.MLPClassifier` with the stochastic solvers
('adam', 'sgd'): the same constructor parameters (names, defaults, meaning), methods and
fitted attributes, so it goes into a ``Pipeline``, ``GridSearchCV`` or
``cross_val_score`` unchanged::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from fastbp.sklearn import MLPClassifier

    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(100,)))
    model.fit(X_train, y_train)

Each training epoch is one compiled call (:meth:`fastbp.MultiLayerNet.train_epoch`) that
runs every batch through the fused forward/backward/update step of
:mod:`fastbp.kernels.mlp`. scikit-learn's arithmetic is followed where it defines the
result: Glorot-uniform initial weights drawn from ``random_state`` in scikit-learn's
order, the same shuffles and validation split for the same ``random_state``, the L2 term
``0.5 * alpha * ||W||^2 / batch_rows``, Adam with ``epsilon``, SGD with momentum or
Nesterov and the 'constant', 'invscaling' and 'adaptive' schedules, the stopping rules of
``tol`` and ``n_iter_no_change``, and a softmax output for more than two classes or a
logistic one for binary and multilabel targets. Training runs in the dtype of ``X``
(float32 stays float32).

Differences: ``solver='lbfgs'`` is not available (ValueError at ``fit``), nor is sparse
input (TypeError, as scikit-learn's checks expect of an estimator that refuses it). The
loss is computed from the logits (log-sum-exp), not from probabilities clipped at the
dtype's epsilon, so ``loss_`` differs from scikit-learn's only where a probability is
within epsilon of 0 or 1.

scikit-learn is an optional dependency (``pip install fastbp[sklearn]``), imported only
by this module.
"""
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, column_or_1d, shuffle as _shuffle
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import (_check_partial_fit_first_call, type_of_target,
                                          unique_labels)
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastbp.sklearn needs scikit-learn: pip install 'fastbp[sklearn]'"
                      ) from exc

from .kernels._docstrings import with_doc
from .multilayer import MultiLayerNet
from .optimizers import SGD, Adam, Momentum, Nesterov

__all__ = ["MLPClassifier"]

_STOCHASTIC = ("adam", "sgd")
#: scikit-learn's factor of the Glorot-uniform bound ``sqrt(factor / (fan_in + fan_out))``.
_GLOROT_FACTOR = {"logistic": 2.0}
_GLOROT_DEFAULT = 6.0
#: scikit-learn's 'adaptive' schedule stops once the learning rate is this small.
_ADAPTIVE_MIN_LR = 1e-6
#: scikit-learn's fastbp names of the hidden activations.
_ACTIVATION = {"relu": "relu", "logistic": "sigmoid", "tanh": "tanh", "identity": "identity"}

#: The parameter and return headings the predict methods share (filled in by with_doc).
_X_RETURNS = ("Parameters\n"
              "        ----------\n"
              "        X : array-like of shape (n_samples, n_features)\n"
              "\n"
              "        Returns\n"
              "        -------")
_PREDICT_DOCS = {
    "X_returns": _X_RETURNS,
    "X_returns_proba": _X_RETURNS + "\n        ndarray of shape (n_samples, n_classes)",
}


def _check_stochastic(est):
    if est.solver not in _STOCHASTIC:
        raise AttributeError("partial_fit is only available for stochastic optimizers. "
                             f"{est.solver} is not stochastic.")
    return True


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier trained by fastbp's fused step.

    The constructor, methods and fitted attributes of
    :class:`sklearn.neural_network.MLPClassifier` (scikit-learn 1.9), for the solvers
    'adam' and 'sgd'.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int or int, default=(100,)
        Widths of the hidden layers.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Hidden activation.
    solver : {'adam', 'sgd', 'lbfgs'}, default='adam'
        'lbfgs' raises ValueError at :meth:`fit` (use scikit-learn's estimator for it).
    alpha : float, default=0.0001
        L2 penalty: each batch of ``m`` rows adds ``0.5 * alpha * sum(W**2) / m`` to its
        loss (weights only, not intercepts).
    batch_size : int or 'auto', default='auto'
        Rows per batch; 'auto' is ``min(200, n_samples)``.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Schedule of the 'sgd' solver: 'invscaling' sets the rate to
        ``learning_rate_init / (t_ + 1) ** power_t`` after each epoch; 'adaptive' divides
        it by 5 whenever ``n_iter_no_change`` epochs did not improve by ``tol``.
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
    max_iter : int, default=200
        Epochs.
    shuffle : bool, default=True
        Shuffle the rows every epoch.
    random_state : int, RandomState instance or None, default=None
        Initial weights, shuffles and the early-stopping split, drawn as scikit-learn
        draws them.
    tol : float, default=1e-4
    verbose : bool, default=False
        Print the loss (and validation score) of every epoch.
    warm_start : bool, default=False
        Continue from the previous fit's weights.
    momentum : float, default=0.9
        Momentum of 'sgd', in [0, 1).
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (stratified for single-output
        targets), stop when their accuracy has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the best epoch's weights.
    validation_fraction : float, default=0.1
    beta_1, beta_2 : float, default=0.9, 0.999
        Adam's decay rates, in [0, 1).
    epsilon : float, default=1e-8
        Adam's ``m / (sqrt(v) + epsilon)``.
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        Used by 'lbfgs' only; accepted for compatibility.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    loss_ : float
        Mean training loss of the last epoch, L2 term included.
    best_loss_ : float or None
        Lowest ``loss_`` seen (None with early stopping).
    loss_curve_ : list of float
    validation_scores_ : list of float or None
    best_validation_score_ : float or None
    t_ : int
        Training rows seen (over all epochs).
    coefs_ : list of ndarray
        Weight matrices, ``coefs_[i]`` of shape (units in layer i, units in layer i + 1),
        in the training dtype.
    intercepts_ : list of ndarray
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When ``X`` had string column names.
    n_iter_ : int
        Epochs run.
    n_layers_ : int
    n_outputs_ : int
    out_activation_ : {'softmax', 'logistic'}
    """

    _parameter_constraints = dict(_SkMLPClassifier._parameter_constraints)

    def __init__(self, hidden_layer_sizes: int | Sequence[int] = (100,),
                 activation: str = "relu", *, solver: str = "adam", alpha: float = 0.0001,
                 batch_size: int | str = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
                 shuffle: bool = True,
                 random_state: int | np.random.RandomState | None = None, tol: float = 1e-4,
                 verbose: bool = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: int = 10, max_fun: int = 15000) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    # -- scikit-learn protocol ----------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = False
        return tags

    def __getstate__(self):
        # The network's params are views into one buffer, which pickling would split;
        # keep coefs_/intercepts_ (copies) and rebuild the network on first use.
        state = self.__dict__.copy()
        state.pop("_net", None)
        opt = state.pop("_optimizer", None)
        if opt is not None:
            # Its state arrays are views into buffers laid out like the dropped network's;
            # keep copies and the (scheduled) learning rate, and rebuild it on load.
            state["_optimizer_state"] = (opt.lr, opt.state_dict())
        if "coefs_" in state:
            state["coefs_"] = [np.array(c) for c in state["coefs_"]]
            state["intercepts_"] = [np.array(b) for b in state["intercepts_"]]
        return state

    def __setstate__(self, state):
        saved = state.pop("_optimizer_state", None)
        self.__dict__.update(state)
        if saved is not None:
            opt = self._make_optimizer()
            opt.lr = saved[0]
            opt.load_state_dict(saved[1])
            self._optimizer = opt

    # -- fitting --------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
            ) -> "MLPClassifier":
        """Fit the model to `X` and `y`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            float32 input trains in float32, anything else in float64.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels of any type, or a multilabel indicator matrix.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights: each batch's loss is the weighted mean of its rows' losses, and
            its L2 term is divided by the batch's weight instead of its rows.

        Returns
        -------
        self : MLPClassifier
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(_check_stochastic)
    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                    classes: ArrayLike | None = None) -> "MLPClassifier":
        """One epoch over `X` and `y`, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights, as in :meth:`fit`.
        classes : array of shape (n_classes,), default=None
            Every class of all calls; required on the first call (not for multilabel
            targets).

        Returns
        -------
        self : MLPClassifier
        """
        self._validate_params()
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=False, multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same "
                                     "classes as in the previous call to fit. Previously "
                                     f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def _fit(self, X, y, sample_weight, incremental):
        if self.solver not in _STOCHASTIC:
            raise ValueError(f"solver={self.solver!r} is not available in fastbp's "
                             "MLPClassifier; use solver='adam' or 'sgd', or "
                             "sklearn.neural_network.MLPClassifier for 'lbfgs'")
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if any(h <= 0 for h in hidden) or not hidden:
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        self.n_outputs_ = Y.shape[1]
        units = [X.shape[1]] + [int(h) for h in hidden] + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(units, X.dtype)
        elif self._network().dtype != X.dtype:
            # scikit-learn computes in X's dtype; the network keeps the dtype of its first
            # fit, so X follows it.
            X = X.astype(self._net.dtype)
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        self._fit_stochastic(X, Y, sample_weight, incremental)
        if not np.isfinite(self._net._flat).all():
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        return self

    def _initialize(self, units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(units)
        self.out_activation_ = ("softmax" if self._label_binarizer.y_type_ == "multiclass"
                                else "logistic")
        net = MultiLayerNet(units[0], units[1:-1], units[-1], _ACTIVATION[self.activation],
                            1.0, dtype=dtype, seed=0, fused_only=True,
                            output="softmax" if self.out_activation_ == "softmax"
                            else "logistic")
        factor = _GLOROT_FACTOR.get(self.activation, _GLOROT_DEFAULT)
        rs = self._random_state
        for i in range(1, len(units)):
            # scikit-learn's draws, in its order: per layer the weights, then the
            # intercepts, in float64, then cast.
            bound = np.sqrt(factor / (units[i - 1] + units[i]))
            net.params[f"W{i}"][...] = rs.uniform(-bound, bound, (units[i - 1], units[i]))
            net.params[f"b{i}"][...] = rs.uniform(-bound, bound, units[i])
        self._net = net
        self._bind()
        self._best_flat = net._flat.copy()
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _bind(self):
        """coefs_ and intercepts_ as the network's parameter arrays (views)."""
        net = self._net
        n = self.n_layers_ - 1
        self.coefs_ = [net.params[f"W{i}"] for i in range(1, n + 1)]
        self.intercepts_ = [net.params[f"b{i}"] for i in range(1, n + 1)]

    def _network(self):
        """The network, with any coefs_/intercepts_ the caller replaced copied in (and
        rebuilt after unpickling)."""
        net = getattr(self, "_net", None)
        n = self.n_layers_ - 1
        if net is None:
            units = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
            net = MultiLayerNet(units[0], units[1:-1], units[-1],
                                _ACTIVATION[self.activation], 1.0,
                                dtype=self.coefs_[0].dtype, seed=0, fused_only=True,
                                output="softmax" if self.out_activation_ == "softmax"
                                else "logistic")
            self._net = net
        for i in range(1, n + 1):
            for arrays, key in ((self.coefs_, f"W{i}"), (self.intercepts_, f"b{i}")):
                view = net.params[key]
                if arrays[i - 1] is not view:
                    view[...] = arrays[i - 1]
        self._bind()
        return net

    def _make_optimizer(self):
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2)
        if self.momentum == 0:
            return SGD(lr=self.learning_rate_init)
        cls = Nesterov if self.nesterovs_momentum else Momentum
        return cls(lr=self.learning_rate_init, momentum=self.momentum)

    def _fit_stochastic(self, X, Y, sample_weight, incremental):
        net = self._network()
        early_stopping = self.early_stopping
        if early_stopping:
            stratify = Y if self.n_outputs_ == 1 else None
            if sample_weight is None:
                X_train, X_val, Y_train, Y_val = train_test_split(
                    X, Y, random_state=self._random_state,
                    test_size=self.validation_fraction, stratify=stratify)
                w_train = w_val = None
            else:
                X_train, X_val, Y_train, Y_val, w_train, w_val = train_test_split(
                    X, Y, sample_weight, random_state=self._random_state,
                    test_size=self.validation_fraction, stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            y_val = self._label_binarizer.inverse_transform(Y_val)
        else:
            X_train, Y_train, w_train = X, Y, sample_weight
            X_val = y_val = w_val = None
        n_train = X_train.shape[0]
        X_train = np.ascontiguousarray(X_train)
        if self.out_activation_ == "softmax":
            T_train = np.ascontiguousarray(Y_train.argmax(axis=1), dtype=np.intp)
        else:
            T_train = np.ascontiguousarray(Y_train, dtype=net.dtype)
        if self.batch_size == "auto":
            batch_size = min(200, n_train)
        else:
            if self.batch_size > n_train:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It "
                              "is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_train))
        sample_idx = np.arange(n_train, dtype=np.int64)
        opt = self._optimizer
        eps = self.epsilon if self.solver == "adam" else None
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = _shuffle(sample_idx, random_state=self._random_state)
                self.loss_ = net.train_epoch(X_train, T_train, opt, batch_size,
                                             order=sample_idx, alpha=self.alpha,
                                             adam_epsilon=eps, sample_weight=w_train)
                self.n_iter_ += 1
                self.t_ += n_train
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                self._update_no_improvement_count(early_stopping, X_val, y_val, w_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    opt.lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and "
                                  "the optimization hasn't converged yet." % self.max_iter,
                                  ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if early_stopping:
            net._flat[...] = self._best_flat

    def _trigger_stopping(self, msg):
        # scikit-learn's rule: stop, except that 'adaptive' SGD divides its rate by 5
        # first (and stops once the rate is at most 1e-6).
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        opt = self._optimizer
        if opt.lr <= _ADAPTIVE_MIN_LR:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        opt.lr = opt.lr / 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % opt.lr)
        return False

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, w_val):
        if early_stopping:
            score = self._score(X_val, y_val, w_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_flat[...] = self._net._flat
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _score(self, X, y, sample_weight=None):
        # accuracy without input validation (X was validated by fit)
        proba = self._network().probabilities(X)
        if not np.isfinite(proba).all():
            return np.nan
        return accuracy_score(y, self._decode(proba), sample_weight=sample_weight)

    # -- prediction -----------------------------------------------------------------------
    def _output(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=False, dtype=(np.float64, np.float32),
                          reset=False)
        net = self._network()
        return net.probabilities(np.ascontiguousarray(X, dtype=net.dtype))

    def _decode(self, out):
        if self.n_outputs_ == 1:
            out = out.ravel()
        return self._label_binarizer.inverse_transform(out)

    @with_doc(**_PREDICT_DOCS)
    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted classes of the rows of `X`.

        {X_returns}
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Class labels, or the indicator matrix of a multilabel fit.
        """
        return self._decode(self._output(X))

    @with_doc(**_PREDICT_DOCS)
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities of the rows of `X`.

        {X_returns_proba}
            In the order of ``classes_``; the training dtype.
        """
        out = self._output(X)
        if self.n_outputs_ == 1:
            p = out.ravel()
            return np.vstack([1 - p, p]).T
        return out

    @with_doc(**_PREDICT_DOCS)
    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """The natural logarithm of :meth:`predict_proba`.

        {X_returns_proba}
        """
        p = self.predict_proba(X)
        return np.log(p, out=p)
