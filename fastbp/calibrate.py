"""``fastbp calibrate``: measure where this machine's parallel twins start to pay.

Every kernel with a ``prange`` has a serial and a parallel twin (the same bits) and runs the
parallel one from a size threshold, where the work outweighs the fork/join of Numba's
pool. That price depends on the machine: the core count, the threading layer, the SIMD
width. :func:`calibrate` times both twins of representative kernels over a grid of sizes
and takes each kernel's crossover; a threshold is the latest crossover of its kernels, so
that none of them goes to the pool before it pays. :func:`save` writes the thresholds to
:func:`calibration_path` under a key of this CPU, pool size and threading layer; the next
``import fastbp`` on the same machine compiles its kernels with them
(:func:`fastbp.kernels.machine_thresholds`).

* ``PARALLEL_MIN_ELEMENTS`` (streaming passes): :func:`fastbp.kernels.sgd_decay_update` and
  :func:`fastbp.kernels.relu_forward`;
* ``PARALLEL_MIN_HEAVY_ELEMENTS`` (an exponential, square root or division per element):
  :func:`fastbp.kernels.adam_update` and :func:`fastbp.kernels.sigmoid_forward`;
* ``CONV_PARALLEL_MIN_MACS``: :func:`fastbp.kernels.conv2d_forward`, samples split over
  the pool.

The three twin thresholds of the training steps' own passes (``PARALLEL_MIN_ROWS`` and the
fused optimizer passes) were set by timing whole steps, where the passes follow BLAS calls;
they keep their source values (and "never" on a one-thread pool). The thresholds that choose
between summation orders (BLAS or loops, listed or dense products) are not twin thresholds:
they stay fixed, so results do not differ between machines (docs/decisions/thresholds.md).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os

import numba
import numpy as np

from . import kernels
from .bench import calls_per_sample, seconds_per_call
from .kernels import (NEVER, SOURCE_TWIN_THRESHOLDS, calibration_path, machine_key,
                      machine_thresholds)

#: Array sizes (elements) timed for the two elementwise thresholds.
ELEMENT_SIZES = tuple(1 << k for k in range(10, 23))
_CONV_IMAGE, _CONV_FILTERS, _CONV_KERNEL = 12, 8, 5
_CONV_SIDE = _CONV_IMAGE - _CONV_KERNEL + 1
#: Multiply-adds of one sample of the timed convolution (8 filters 5x5 over a 12x12 image).
CONV_SAMPLE_MACS = _CONV_FILTERS * _CONV_KERNEL * _CONV_KERNEL * _CONV_SIDE * _CONV_SIDE
#: Multiply-adds timed for ``CONV_PARALLEL_MIN_MACS``: batches of 2 to 512 samples.
CONV_MACS = tuple(CONV_SAMPLE_MACS << k for k in range(1, 10))


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call of both twins at one size (median of alternating samples)."""

    size: int
    serial: float
    parallel: float


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured and the thresholds it derived."""

    #: all twin thresholds (name -> value), as written to the calibration file
    thresholds: dict
    #: kernel name -> its :class:`Timing` list, for the measured thresholds
    timings: dict


def crossover(timings, tolerance=0.1) -> int:
    """The smallest size at which the parallel twin is faster and from which it is never
    slower by more than `tolerance` (a fraction of the serial time) at a larger size timed;
    :data:`fastbp.kernels.NEVER` if it is not faster at the largest size.

    Looking at every larger size keeps one lucky sample below the true crossover from
    setting the threshold; the tolerance keeps one unlucky sample above it (a tie where
    both twins are limited by memory bandwidth) from pushing the threshold to the end."""
    ordered = sorted(timings, key=lambda t: t.size)
    threshold = NEVER
    for i in reversed(range(len(ordered))):
        t = ordered[i]
        if t.parallel > t.serial * (1 + tolerance):
            break
        if t.parallel < t.serial:
            threshold = t.size
    return threshold


def _time_twins(call, sizes, samples, min_seconds, progress):
    """:class:`Timing` for each size; `call(size, min_parallel)` returns a zero-argument
    function. Serial and parallel samples alternate, so drift hits both sides alike."""
    out = []
    for size in sizes:
        serial, parallel = call(size, NEVER), call(size, 1)
        serial(), parallel()  # compiled and warm
        number = {fn: calls_per_sample(fn, min_seconds) for fn in (serial, parallel)}
        s, p = [], []
        for i in range(samples):
            for fn, acc in ((serial, s), (parallel, p)) if i % 2 == 0 else ((parallel, p), (serial, s)):
                acc.append(seconds_per_call(fn, number[fn]))
        out.append(Timing(size, float(np.median(s)), float(np.median(p))))
        progress(f"  {size:>9,}: serial {out[-1].serial * 1e6:9.1f} us, parallel "
                 f"{out[-1].parallel * 1e6:9.1f} us")
    return out


def _vectors(size, count):
    rng = np.random.default_rng(0)
    return [rng.random(size, dtype=np.float32) - np.float32(0.5) for _ in range(count)]


def _sgd_call(size, min_parallel):
    param, grad = _vectors(size, 2)
    return lambda: kernels.sgd_decay_update(param, grad, 0.0, 0.0, min_parallel)


def _relu_call(size, min_parallel):
    x, out = _vectors(size, 2)
    return lambda: kernels.relu_forward(x, out, min_parallel)


def _adam_call(size, min_parallel):
    param, grad, m, v = _vectors(size, 4)
    v = np.abs(v)
    return lambda: kernels.adam_update(param, grad, m, v, 0.0, 0.9, 0.999, 0.0, min_parallel)


def _sigmoid_call(size, min_parallel):
    x, out = _vectors(size, 2)
    return lambda: kernels.sigmoid_forward(x, out, min_parallel)


def _conv_call(macs, min_parallel):
    batch = macs // CONV_SAMPLE_MACS
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, _CONV_IMAGE, _CONV_IMAGE), dtype=np.float32)
    W = rng.random((_CONV_FILTERS, 1, _CONV_KERNEL, _CONV_KERNEL), dtype=np.float32)
    b = np.zeros(_CONV_FILTERS, np.float32)
    out = np.empty((batch, _CONV_FILTERS, _CONV_SIDE, _CONV_SIDE), np.float32)
    return lambda: kernels.conv2d_forward(x, W, b, 1, 0, out, min_parallel)


#: The measured thresholds: threshold -> {kernel: (call, sizes)}; `call(size, min_parallel)`
#: returns a zero-argument function that runs the kernel once (float32).
MEASURED = {
    "PARALLEL_MIN_ELEMENTS": {"sgd_decay_update": (_sgd_call, ELEMENT_SIZES),
                              "relu_forward": (_relu_call, ELEMENT_SIZES)},
    "PARALLEL_MIN_HEAVY_ELEMENTS": {"adam_update": (_adam_call, ELEMENT_SIZES),
                                    "sigmoid_forward": (_sigmoid_call, ELEMENT_SIZES)},
    "CONV_PARALLEL_MIN_MACS": {"conv2d_forward": (_conv_call, CONV_MACS)},
}


def calibrate(*, samples=7, min_seconds=0.002, progress=print) -> Calibration:
    """Time the twins of the kernels of :data:`MEASURED` on Numba's whole pool and derive
    their thresholds (module docstring); the other twin thresholds keep their source values
    (all "never" on a one-thread pool).

    Parameters
    ----------
    samples : int
        Alternating samples per twin and size (the median is kept).
    min_seconds : float
        Each sample repeats the call for at least this long.
    progress : callable
        Called with one line of text per size timed.
    """
    if numba.config.DISABLE_JIT:
        raise ValueError("fastbp calibrate times compiled kernels: unset NUMBA_DISABLE_JIT")
    previous = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    try:
        progress(f"Numba's pool: {numba.config.NUMBA_NUM_THREADS} threads")
        timings = {}
        for threshold, measured in MEASURED.items():
            for kernel, (call, sizes) in measured.items():
                unit = "multiply-adds" if threshold == "CONV_PARALLEL_MIN_MACS" else "elements"
                progress(f"{kernel} (float32, {unit}), for {threshold}:")
                timings[kernel] = _time_twins(call, sizes, samples, min_seconds, progress)
    finally:
        numba.set_num_threads(previous)
    thresholds = dict(SOURCE_TWIN_THRESHOLDS) if numba.config.NUMBA_NUM_THREADS > 1 else \
        dict.fromkeys(SOURCE_TWIN_THRESHOLDS, NEVER)
    for threshold, measured in MEASURED.items():
        thresholds[threshold] = max(crossover(timings[kernel]) for kernel in measured)
    return Calibration(thresholds, timings)


def save(calibration: Calibration, path=None) -> str:
    """Write `calibration` as this machine's entry of the calibration file at `path`
    (default :func:`calibration_path`), keeping other machines' entries; returns the path.

    The file is replaced atomically (a new file renamed over the old one). An unreadable
    old file is replaced. Raises ``OSError`` if the folder cannot be written and
    ``ValueError`` if no path is configured (``FASTBP_THRESHOLDS`` set to empty)."""
    path = calibration_path() if path is None else os.fspath(path)
    if not path:
        raise ValueError("FASTBP_THRESHOLDS is empty (calibration turned off): pass --out "
                         "PATH or unset it")
    key = machine_key()
    try:
        with open(path, encoding="utf-8") as f:
            others = [e for e in json.load(f)["machines"] if e["machine"] != key]
    except (OSError, ValueError, KeyError, TypeError):
        others = []
    entry = {"machine": key, "thresholds": calibration.thresholds,
             "measured": {kernel: [dataclasses.asdict(t) for t in timings]
                          for kernel, timings in calibration.timings.items()},
             "fastbp": _version(), "date": datetime.datetime.now(datetime.timezone.utc)
             .isoformat(timespec="seconds")}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"machines": others + [entry]}, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def describe() -> str:
    """The thresholds this process compiles with, their origin and the calibration file."""
    current = machine_thresholds()
    lines = [f"{name} = {'never (serial only)' if value == NEVER else f'{value:,}'}"
             for name, value in current.values.items()]
    lines.append(f"origin: {current.origin}"
                 + (f" (source values: {', '.join(f'{v:,}' for v in SOURCE_TWIN_THRESHOLDS.values())})"
                    if current.origin != "source" else ""))
    lines.append(f"calibration file: {calibration_path() or 'none (FASTBP_THRESHOLDS is empty)'}")
    if current.note:
        lines.append(f"note: {current.note}")
    return "\n".join(lines)


def _version():
    from . import __version__
    return __version__
