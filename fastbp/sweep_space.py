"""The search space of :mod:`fastbp.sweep`: parameters, their distributions and the sampler.

A space maps parameter names to a fixed value or a distribution:

=================  ==================================================  =====================
name               values                                              default (the book's)
=================  ==================================================  =====================
``lr``             number > 0                                          0.01
``weight_decay``   number >= 0                                         0
``dropout``        number in [0, 1) (0: no Dropout layers)             0
``epochs``         int >= 1                                            50
``batch_size``     int >= 1                                            100
``hidden``         hidden sizes: ``100x6``, ``100-50``, ``100x3-50``   100x6
``activation``     ``relu`` or ``sigmoid``                             relu
``init``           ``he``, ``xavier`` or a standard deviation > 0      he
``optimizer``      ``sgd``, ``momentum``, ``nesterov``, ``adagrad``,   sgd
                   ``rmsprop``, ``adam``
``batchnorm``      true or false                                       false
=================  ==================================================  =====================

Distributions (:class:`Uniform`, :class:`LogUniform`, :class:`Choice`, :class:`Grid`) are
written ``uniform:LOW:HIGH``, ``loguniform:LOW:HIGH``, ``choice:A,B,...`` and
``grid:A,B,...`` on the command line and in TOML files (where ``{loguniform = [1e-6,
1e-2]}`` and ``{choice = [...]}`` also work). Random parameters are drawn independently
for each trial; grid parameters form a Cartesian product that trial ``i`` walks in order
(point ``i mod size``).

Reproducibility: trial ``i`` draws from a generator seeded with
``SeedSequence(seed, spawn_key=(i,))`` (what ``SeedSequence(seed).spawn(n)[i]`` gives,
whatever ``n``), so trial ``i``'s parameters and seed depend only on the sweep seed and
``i``: the same in a fresh run, in a resumed run and in a sweep extended to more trials.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Choice", "DEFAULTS", "Grid", "LogUniform", "PARAMETERS", "SpaceError", "Uniform",
           "book_space", "check_space", "grid_size", "hidden_text", "parse_spec", "space_from_toml",
           "space_to_json", "space_from_json", "trial_spec"]

ACTIVATIONS = ("relu", "sigmoid")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")

#: The book's chapter-6 settings, used for every parameter a space leaves out.
DEFAULTS = dict(lr=0.01, weight_decay=0.0, dropout=0.0, epochs=50, batch_size=100,
                hidden=[100] * 6, activation="relu", init="he", optimizer="sgd",
                batchnorm=False)


class SpaceError(ValueError):
    """A search space that cannot be used: unknown parameter, bad bound, empty choice..."""


# --------------------------------------------------------------------------- distributions


@dataclass(frozen=True)
class Uniform:
    """``low + (high - low) * U[0, 1)``: ``rng.uniform(low, high)``."""

    low: float
    high: float

    def sample(self, rng):
        """One value from `rng` (a ``numpy.random.Generator``)."""
        return float(rng.uniform(self.low, self.high))

    def __str__(self):
        return f"uniform:{self.low:g}:{self.high:g}"


@dataclass(frozen=True)
class LogUniform:
    """``10 ** uniform(log10(low), log10(high))``, the book's ``10 ** np.random.uniform(-6,
    -2)``."""

    low: float
    high: float

    def sample(self, rng):
        """One value from `rng` (a ``numpy.random.Generator``)."""
        return float(10.0 ** rng.uniform(math.log10(self.low), math.log10(self.high)))

    def __str__(self):
        return f"loguniform:{self.low:g}:{self.high:g}"


@dataclass(frozen=True)
class Choice:
    """One of `values`, each with the same probability."""

    values: tuple

    def sample(self, rng):
        """One value from `rng` (a ``numpy.random.Generator``)."""
        return self.values[int(rng.integers(len(self.values)))]

    def __str__(self):
        return "choice:" + ",".join(_text(v) for v in self.values)


@dataclass(frozen=True)
class Grid:
    """Every one of `values`, in order (grid search)."""

    values: tuple

    def __str__(self):
        return "grid:" + ",".join(_text(v) for v in self.values)


_DISTRIBUTIONS = {"uniform": Uniform, "loguniform": LogUniform, "choice": Choice, "grid": Grid}


def _text(value) -> str:
    if isinstance(value, list):
        return hidden_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def hidden_text(sizes) -> str:
    """``[100, 100, 100, 50]`` -> ``"100x3-50"`` (the form :func:`parse_spec` reads)."""
    parts = []
    for size, run in itertools.groupby(sizes):
        n = len(list(run))
        parts.append(f"{size}x{n}" if n > 1 else f"{size}")
    return "-".join(parts)


# --------------------------------------------------------------------------- values


def _number(name, value, *, kind="float"):
    if isinstance(value, str):
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            raise SpaceError(f"{name}: expected {'an integer' if kind == 'int' else 'a number'}, "
                             f"got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpaceError(f"{name}: expected a number, got {value!r}")
    if kind == "int":
        if float(value) != int(value):
            raise SpaceError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise SpaceError(f"{name}: expected a finite number, got {value}")
    return value


def _hidden(name, value):
    if isinstance(value, (list, tuple)):
        sizes = [_number(f"{name}[{i}]", v, kind="int") for i, v in enumerate(value)]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        sizes = [int(value)]
    elif isinstance(value, str):
        sizes = []
        # "100,100" (as fastbp train's --hidden) or "100x3-50"
        for part in value.replace(",", "-").split("-"):
            size, times, count = part.strip().lower().partition("x")
            try:
                sizes += [int(size)] * (int(count) if times else 1)
            except ValueError:
                raise SpaceError(f"{name}: expected hidden sizes such as 100x6, 100-50 or "
                                 f"100x3-50, got {value!r}") from None
    else:
        raise SpaceError(f"{name}: expected hidden sizes such as 100x6, got {value!r}")
    if not sizes or min(sizes) < 1:
        raise SpaceError(f"{name}: hidden sizes must be positive and at least one layer, got "
                         f"{value!r}")
    return sizes


def _bool(name, value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise SpaceError(f"{name}: expected true or false, got {value!r}")


def _word(options):
    def check(name, value):
        text = str(value).strip().lower()
        if text not in options:
            raise SpaceError(f"{name}: expected one of {', '.join(options)}, got {value!r}")
        return text
    return check


def _init(name, value):
    if isinstance(value, str) and value.strip().lower() in ("he", "xavier", "relu", "sigmoid"):
        return {"relu": "he", "sigmoid": "xavier"}.get(value.strip().lower(), value.strip().lower())
    try:
        std = _number(name, value)
    except SpaceError:
        raise SpaceError(f"{name}: expected he, xavier or a standard deviation > 0, got "
                         f"{value!r}") from None
    if std <= 0:
        raise SpaceError(f"{name}: a standard deviation must be > 0, got {value!r}")
    return std


def _ranged(kind, low=None, high=None, *, low_open=False, high_open=False):
    """A checker for numbers of `kind` in [low, high] (ends open as said)."""
    def check(name, value):
        v = _number(name, value, kind=kind)
        if low is not None and (v < low or (low_open and v == low)):
            raise SpaceError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {v:g}")
        if high is not None and (v > high or (high_open and v == high)):
            raise SpaceError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {v:g}")
        return v
    return check


#: Every parameter a space may set: its value checker and whether it is a real number
#: (which ``uniform`` and ``loguniform`` need).
PARAMETERS = {
    "lr": (_ranged("float", 0, low_open=True), True),
    "weight_decay": (_ranged("float", 0), True),
    "dropout": (_ranged("float", 0, 1, high_open=True), True),
    "epochs": (_ranged("int", 1), False),
    "batch_size": (_ranged("int", 1), False),
    "hidden": (_hidden, False),
    "activation": (_word(ACTIVATIONS), False),
    "init": (_init, False),
    "optimizer": (_word(OPTIMIZERS), False),
    "batchnorm": (_bool, False),
}


def _check_name(name):
    if name not in PARAMETERS:
        raise SpaceError(f"unknown parameter {name!r}; the parameters are "
                         f"{', '.join(PARAMETERS)}")


def _split_values(name, text):
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise SpaceError(f"{name}: the list of values is empty; give at least one, e.g. "
                         f"choice:A,B")
    return values


def parse_spec(name: str, spec):
    """One parameter's fixed value or distribution, checked.

    Parameters
    ----------
    name : str
        A key of :data:`PARAMETERS`.
    spec : str, number, bool, list or dict
        ``"uniform:LOW:HIGH"``, ``"loguniform:LOW:HIGH"``, ``"choice:A,B,..."``,
        ``"grid:A,B,..."``, a TOML-style table with one of those keys (``{"loguniform":
        [1e-6, 1e-2]}``, ``{"choice": [...]}``), or a fixed value (a number, ``"100x6"``,
        ``True`` ...). Hidden sizes in a choice or grid are written ``100x6`` or
        ``100-50``, not with commas.

    Returns
    -------
    Uniform, LogUniform, Choice, Grid or a fixed value (int, float, str, bool, list of int)

    Raises
    ------
    SpaceError
        Unknown parameter, a bound out of the parameter's range, ``low >= high``, a
        log-uniform bound <= 0, an empty choice, a distribution the parameter cannot take
        (``uniform`` for a non-real parameter), or a value that does not parse; the
        message names the parameter.
    """
    _check_name(name)
    check, real = PARAMETERS[name]
    kind, args = None, None
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in _DISTRIBUTIONS:
            raise SpaceError(f"{name}: a table must have exactly one of the keys "
                             f"{', '.join(_DISTRIBUTIONS)}, got {sorted(spec)}")
        kind, args = next(iter(spec.items()))
        if not isinstance(args, (list, tuple)):
            raise SpaceError(f"{name}: {kind} needs a list, e.g. {{{kind} = [1, 2]}}")
        args = list(args)
    elif isinstance(spec, str) and spec.partition(":")[0].strip().lower() in _DISTRIBUTIONS:
        kind, _, rest = spec.partition(":")
        kind = kind.strip().lower()
        args = rest.split(":") if kind in ("uniform", "loguniform") else _split_values(name, rest)
    if kind is None:
        return check(name, spec)
    if kind in ("uniform", "loguniform"):
        if not real:
            raise SpaceError(f"{name} takes no {kind} distribution; use choice:... or grid:...")
        if len(args) != 2:
            raise SpaceError(f"{name}: {kind} needs two bounds, {kind}:LOW:HIGH, got {spec!r}")
        low, high = (_number(name, a) for a in args)
        if low >= high:
            raise SpaceError(f"{name}: {kind} needs low < high, got low {low:g} >= high "
                             f"{high:g}")
        if kind == "loguniform" and low <= 0:
            raise SpaceError(f"{name}: loguniform bounds must be > 0, got {low:g}")
        check(name, low)
        if name == "dropout":  # the upper end is excluded: uniform never draws it
            if high > 1:
                check(name, high)
        else:
            check(name, high)
        return _DISTRIBUTIONS[kind](low, high)
    if not args:
        raise SpaceError(f"{name}: {kind} needs at least one value, got an empty list")
    values = tuple(check(name, v) for v in args)
    return _DISTRIBUTIONS[kind](values)


def check_space(space) -> dict:
    """A checked copy of `space` (``{name: spec}``) with every value parsed by
    :func:`parse_spec`; raises :class:`SpaceError` naming the first bad entry."""
    if not isinstance(space, dict):
        raise SpaceError(f"a space must be a dict of parameter -> value or distribution, got "
                         f"{type(space).__name__}")
    out = {}
    for name, spec in space.items():
        if isinstance(spec, (Uniform, LogUniform, Choice, Grid)):
            spec = _from_json({"kind": type(spec).__name__.lower(), **_args(spec)})
            out[name] = parse_spec(name, spec)
        else:
            out[name] = parse_spec(name, spec)
    return out


def book_space() -> dict:
    """The book's ``hyperparameter_optimization.py`` space: log-uniform ``lr`` in
    [1e-6, 1e-2] and ``weight_decay`` in [1e-8, 1e-4]."""
    return {"lr": LogUniform(1e-6, 1e-2), "weight_decay": LogUniform(1e-8, 1e-4)}


def grid_size(space) -> int:
    """Points of the grid that the space's :class:`Grid` parameters span (1 without)."""
    return math.prod(len(v.values) for v in space.values() if isinstance(v, Grid))


def trial_spec(space, seed: int, index: int) -> dict:
    """Trial `index` of the sweep with `space` and `seed`: its parameters and seed.

    Parameters
    ----------
    space : dict
        A checked space (:func:`check_space`).
    seed : int
        The sweep seed (>= 0).
    index : int
        The trial number (>= 0).

    Returns
    -------
    dict
        ``trial`` (`index`), ``seed`` (an int < 2**32 for the network's initial weights,
        Dropout and the mini-batches) and ``params`` (every parameter of
        :data:`PARAMETERS`: the space's value, drawn or fixed, else :data:`DEFAULTS`).
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(index,))
    draw_seq, run_seq = sequence.spawn(2)
    rng = np.random.default_rng(draw_seq)
    params = dict(DEFAULTS)
    grid = [(k, v) for k, v in sorted(space.items()) if isinstance(v, Grid)]
    position = index % grid_size(space)
    for name, dist in reversed(grid):  # the last name varies fastest
        position, at = divmod(position, len(dist.values))
        params[name] = dist.values[at]
    for name in sorted(space):  # a fixed order: the draws do not depend on the dict's order
        spec = space[name]
        if isinstance(spec, Grid):
            continue
        params[name] = spec.sample(rng) if hasattr(spec, "sample") else spec
    params["hidden"] = list(params["hidden"])
    return {"trial": int(index), "seed": int(run_seq.generate_state(1, np.uint32)[0]),
            "params": params}


# --------------------------------------------------------------------------- storage


def _args(spec):
    if isinstance(spec, (Uniform, LogUniform)):
        return {"low": spec.low, "high": spec.high}
    return {"values": list(spec.values)}


def space_to_json(space) -> dict:
    """`space` in JSON types (``{"kind": "loguniform", "low": ..., "high": ...}`` for a
    distribution, the value itself for a fixed one); :func:`space_from_json` reads it."""
    out = {}
    for name, spec in space.items():
        if isinstance(spec, (Uniform, LogUniform, Choice, Grid)):
            out[name] = {"kind": type(spec).__name__.lower(), **_args(spec)}
        else:
            out[name] = spec
    return out


def _from_json(entry):
    if isinstance(entry, dict) and "kind" in entry:
        kind = entry["kind"]
        if kind in ("uniform", "loguniform"):
            return {kind: [entry["low"], entry["high"]]}
        return {kind: list(entry["values"])}
    return entry


def space_from_json(data) -> dict:
    """Inverse of :func:`space_to_json`, checked."""
    return {name: parse_spec(name, _from_json(entry)) for name, entry in data.items()}


def space_from_toml(table) -> dict:
    """A checked space from a TOML table (``[space]`` of a sweep file, already parsed)."""
    if not isinstance(table, dict):
        raise SpaceError("[space] must be a table of parameter = value or distribution")
    return {name: parse_spec(name, spec) for name, spec in table.items()}
