"""Compile one Python body into a serial and a parallel Numba twin.

The umap/pynndescent pattern: the body is written once with ``prange``; ``njit`` treats
``prange`` as ``range`` and ``njit(parallel=True)`` splits it over Numba's thread pool.
Every ``prange`` in fastbp writes disjoint output slices and every reduction runs in a
fixed order, so both twins return bit-identical results for any thread count.

``cache=True`` keeps compiled machine code on disk (``NUMBA_CACHE_DIR`` or ``__pycache__``)
so a new process skips compilation. Numba names a cache file after the function's module,
qualified name and line, and keys its entries by signature and bytecode only, not by jit
options (numba/numba#6845): two dispatchers of one body would share entries, and whichever
twin was compiled second would load the first one's machine code (the serial twin ran the
parfor code, or the parallel twin ran serially, depending on which a process compiled
first). Each twin is therefore compiled from a copy of the body with its own qualified
name, so each gets its own cache files.
"""
import dataclasses
import json
import os
import types
import warnings

import llvmlite.binding as llvm
from numba import config, njit, threading_layer, types as nbtypes
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.ufunc.parallel import _launch_threads

# Start Numba's threading layer now (fastbp.threads has chosen it; the package __init__
# imports that first). A cached serial dispatcher whose machine code calls a parallel twin
# (relu_forward -> _relu_forward_parallel, ...) is loaded from disk without Numba starting
# the layer, and its first parallel call then crashed (segmentation fault, reproduced with
# a warm cache and relu_forward as the first kernel a process calls).
_launch_threads()

# Every size threshold of the kernels lives here, with its reason and the benchmark that
# sets it (benchmarks/bench_*.py, benchmarks/thread_policy.py). The twin thresholds, which
# only pick between the serial and the parallel twin (the same bits either way), follow the
# machine: all of them are "never" when Numba's pool has one thread, and three of them are
# measured by `fastbp calibrate` (fastbp.calibrate) and read below at import. The others
# choose between summation orders and stay as measured here, so results do not depend on
# the machine (docs/decisions/thresholds.md).

#: A twin threshold that is never reached: the serial twin at any size.
NEVER = 1 << 62

#: Default ``min_parallel`` of every public kernel: the machine's threshold of the kernel's
#: class. One value for all, rather than each kernel's threshold as its default: Numba's
#: dispatcher tells omitted integer defaults apart by type only (numba/numba#6173), so two
#: kernels whose omitted defaults differ in value made the second one called from Python
#: take Numba's slow dispatch path on every call (docs/decisions/thresholds.md).
MACHINE_DEFAULT = -1

#: The twin thresholds as measured on the development machine (2 vCPUs of an AMD Zen 4,
#: Numba's tbb pool, AVX-512); each one's reason is at its name below.
SOURCE_TWIN_THRESHOLDS = {
    "PARALLEL_MIN_ELEMENTS": 1 << 16, "PARALLEL_MIN_HEAVY_ELEMENTS": 1 << 16,
    "PARALLEL_MIN_ROWS": 512, "CONV_PARALLEL_MIN_MACS": 1 << 18,
    "FUSED_UPDATE_PARALLEL_MIN_ELEMENTS": 1 << 22,
    "CONVNET_UPDATE_PARALLEL_MIN_ELEMENTS": 1 << 17}


class ThresholdWarning(RuntimeWarning):
    """fastbp's calibration file could not be used; the twin thresholds keep their defaults."""


def calibration_path():
    """Where ``fastbp calibrate`` writes and ``import fastbp`` reads the measured thresholds:
    ``FASTBP_THRESHOLDS`` if set (empty: none is read), else ``fastbp/thresholds.json``
    under ``XDG_CACHE_HOME`` (``~/.cache``)."""
    if "FASTBP_THRESHOLDS" in os.environ:
        return os.environ["FASTBP_THRESHOLDS"] or None
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "fastbp", "thresholds.json")


def machine_key():
    """What a calibration is valid for: the CPU (LLVM's name and features, as in Numba's
    cache key), the size of Numba's pool and its threading layer."""
    return {"cpu": llvm.get_host_cpu_name(),
            "features": llvm.get_host_cpu_features().flatten(),
            "threads": int(config.NUMBA_NUM_THREADS), "threading_layer": threading_layer()}


@dataclasses.dataclass(frozen=True)
class MachineThresholds:
    """The twin thresholds this process compiles with, and where they come from."""

    #: threshold name -> value (:data:`NEVER`: always the serial twin)
    values: dict
    #: ``"calibrated"``, ``"one thread"`` (Numba's pool has one thread: no parallel twin
    #: can gain) or ``"source"`` (the development machine's values)
    origin: str
    #: why a calibration file was not used (``None`` if there was none, or it was)
    note: str | None = None


def _valid_values(values):
    if not isinstance(values, dict) or set(values) != set(SOURCE_TWIN_THRESHOLDS):
        return False
    return all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= NEVER
               for v in values.values())


def load_machine_thresholds(path=None):
    """The twin thresholds for this machine: its entry in the calibration file at `path`
    (default :func:`calibration_path`) if there is one, else the one-thread rule, else
    :data:`SOURCE_TWIN_THRESHOLDS`. A file that cannot be read or parsed gives one
    :class:`ThresholdWarning` and the defaults; a file with no entry for this machine (other
    CPU, pool size or threading layer) is skipped silently, the reason kept in ``note``."""
    path = calibration_path() if path is None else path
    note = None
    if path and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                entries = json.load(f)["machines"]
            key = machine_key()
            mine = [e for e in entries if e["machine"] == key]
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(f"fastbp: cannot use the calibration file {path} ({e!r}); the "
                          "default thresholds apply. Run `fastbp calibrate` to write it "
                          "again.", ThresholdWarning, stacklevel=2)
            mine, note = [], f"{path} is unreadable"
        if mine and _valid_values(mine[0]["thresholds"]):
            return MachineThresholds(dict(mine[0]["thresholds"]), "calibrated", None)
        if mine:
            warnings.warn(f"fastbp: the thresholds in {path} are not positive integers for "
                          f"{sorted(SOURCE_TWIN_THRESHOLDS)}; the defaults apply. Run "
                          "`fastbp calibrate` again.", ThresholdWarning, stacklevel=2)
            note = f"{path} has invalid values"
        elif note is None:
            note = (f"{path} has no entry for this CPU, pool size and threading layer; "
                    "`fastbp calibrate` adds one")
    if config.NUMBA_NUM_THREADS == 1:
        return MachineThresholds(dict.fromkeys(SOURCE_TWIN_THRESHOLDS, NEVER), "one thread",
                                 note)
    return MachineThresholds(dict(SOURCE_TWIN_THRESHOLDS), "source", note)


#: The twin thresholds of this process (read once, at import: compiled kernels hold them as
#: constants, and fastbp's cache entries are keyed by them, see :mod:`._cache`).
MACHINE_THRESHOLDS = load_machine_thresholds()


def machine_thresholds():
    """The twin thresholds this process's kernels are compiled with, and their origin
    (:class:`MachineThresholds`)."""
    return MACHINE_THRESHOLDS


#: Element count from which a streaming elementwise kernel (ReLU, the activations'
#: backwards, SGD, Momentum, Nesterov, BatchNorm, the dropout multiply) goes parallel.
#: Below it the fork/join of Numba's pool costs more than the work
#: (benchmarks/bench_activations.py, benchmarks/elementwise_bandwidth.py; calibrated with
#: sgd_decay_update and relu_forward).
PARALLEL_MIN_ELEMENTS = MACHINE_THRESHOLDS.values["PARALLEL_MIN_ELEMENTS"]

#: The same for elementwise kernels with an exponential, square root or division per
#: element (sigmoid and tanh forward, softmax cross-entropy, AdaGrad, RMSprop, Adam, the
#: dropout mask's generator): more work per element, so the pool pays from fewer elements.
#: Here Adam's crossover was 2^15 elements and ReLU's 2^17 (docs/decisions/thresholds.md);
#: calibrated with adam_update and sigmoid_forward.
PARALLEL_MIN_HEAVY_ELEMENTS = MACHINE_THRESHOLDS.values["PARALLEL_MIN_HEAVY_ELEMENTS"]

#: Parameters from which the optimizer pass inside a fused training step goes parallel.
#: There it follows BLAS calls and serial passes, and waking Numba's pool cost more than
#: the pass for the book's networks (784-100x4-10, Adam, batch 1 and 100; measured with
#: benchmarks/compare_frameworks.py --model mlp4, figures in
#: docs/decisions/fused-optimizer-pass.md). Only networks far larger than the book's go
#: parallel.
FUSED_UPDATE_PARALLEL_MIN_ELEMENTS = MACHINE_THRESHOLDS.values[
    "FUSED_UPDATE_PARALLEL_MIN_ELEMENTS"]

#: Batch rows from which the row passes of the training steps (bias + activation, softmax,
#: masks, argmax) run on Numba's pool (benchmarks/bench_train_step.py: serial and parallel
#: passes were equal from 512 rows up, the parallel ones slower below).
PARALLEL_MIN_ROWS = MACHINE_THRESHOLDS.values["PARALLEL_MIN_ROWS"]

#: Rows per block of the softmax pass: the exponentials of a block run as one flat loop
#: that LLVM vectorizes (a row's 10 logits alone did not vectorize).
SOFTMAX_BLOCK = 64

#: Batches up to this size never call BLAS in the training steps: they list each row's
#: non-zero inputs once (:mod:`._sparse`) and use the list for the first layer's product
#: and its weight gradient. Set where the listed path and the BLAS path cross for
#: 784-50-10 (benchmarks/bench_train_step.py, float32 and float64; see
#: docs/decisions/small-batch-zero-skipping.md).
SMALL_BATCH = 24

#: Multiply-adds (n * d * m) from which an affine product calls BLAS instead of loops: a
#: BLAS call's fixed cost dominates below (benchmarks/bench_affine.py).
AFFINE_BLAS_MIN_FLOPS = 1 << 17

#: Layers with fewer inputs or outputs than this are narrow (the 10 classes of an output
#: layer): a hand-written loop over a row that short does not vectorize.
AFFINE_NARROW_SIDE = 16

#: Multiply-adds from which the three products of a narrow layer (AFFINE_NARROW_SIDE) call
#: BLAS instead of the loops: for a 100 x 10 layer, gemm won all three from 4 rows on and
#: the loops only the two backward products of 1-2 rows (the loops against gemm from
#: compiled code, one OpenBLAS thread; figures in docs/decisions/blas-from-compiled-code.md).
AFFINE_NARROW_BLAS_MIN_FLOPS = 1 << 12

#: Multiply-adds from which a convolution or pooling kernel (fastbp.kernels.conv) runs its
#: parallel twin (samples or filters over Numba's pool). Provisional: set from
#: benchmarks/bench_conv.py (docs/decisions/convolution.md). The book's first layer at
#: batch 1 (conv_relu_pool_backward, 4320 x 25 = 108k) took 47 us serial against 29 us on
#: two threads alone, but its SimpleConvNet step took about 400 us against 300 us with it
#: parallel (the Adam pass that follows on the same pool): kept above it.
CONV_PARALLEL_MIN_MACS = MACHINE_THRESHOLDS.values["CONV_PARALLEL_MIN_MACS"]

#: Batches up to this size run the SimpleConvNet step's affine products (4320 x 100) as
#: loops, not BLAS: at one row sgemm was slower than the loops for ``h @ W2`` and 3x
#: slower for ``dz @ W2.T`` (figures in docs/decisions/convolution.md).
#: AFFINE_BLAS_MIN_FLOPS counts only multiply-adds and sends these one-row products to BLAS.
CONVNET_LOOP_MAX_ROWS = 1

#: BLAS threads during a SimpleConvNet step or evaluation (fastbp.convnet lowers the bound
#: OpenBLAS to this count around the call and restores it). The step alternates Numba's
#: parallel convolution passes with sgemm calls; OpenBLAS's idle workers spin after each
#: call on the cores the convolution's threads need. With one BLAS thread the whole step
#: was faster at every batch size (benchmarks/compare_frameworks.py --model convnet,
#: docs/decisions/convolution.md).
CONVNET_BLAS_THREADS = 1

#: Elements of a weight matrix per block of rows in the one-row fused backward and update
#: (fastbp.kernels.onerow): the block's parameter, gradient and two state rows (4 x 16 KiB
#: in float32) stay in the L2 cache between the gradient's write and the optimizer's read.
#: Set with benchmarks/compare_frameworks.py --model convnet at batch 1
#: (docs/decisions/convolution.md).
ONE_ROW_BLOCK_ELEMENTS = 4096

#: Parameters from which the optimizer pass of the SimpleConvNet step runs parallel. Unlike
#: the fully connected step (FUSED_UPDATE_PARALLEL_MIN_ELEMENTS), the book's ConvNet has
#: 434k parameters, mostly the 4320 x 100 W2, and a pass over them is long enough that
#: two threads beat one even after a BLAS call (docs/decisions/convolution.md). A one-row
#: batch's ``pooled @ W2`` follows the same threshold, so that each block of W2's rows
#: stays with the thread that updates it (fastbp.kernels.onerow).
CONVNET_UPDATE_PARALLEL_MIN_ELEMENTS = MACHINE_THRESHOLDS.values[
    "CONVNET_UPDATE_PARALLEL_MIN_ELEMENTS"]


def threshold_key():
    """Every threshold of this module as ``(name, value)`` pairs: part of the cache key of
    fastbp's compiled functions (:mod:`._cache`), since Numba freezes globals into machine
    code and does not key its cache by their values."""
    return tuple(sorted((k, v) for k, v in globals().items()
                        if k.isupper() and isinstance(v, int)))


def _renamed(body, suffix):
    """A copy of the function `body` whose ``__qualname__`` ends in ``__<suffix>``."""
    f = types.FunctionType(body.__code__, body.__globals__, body.__name__,
                           body.__defaults__, body.__closure__)
    f.__kwdefaults__ = body.__kwdefaults__
    f.__doc__ = body.__doc__
    f.__qualname__ = f"{body.__qualname__}__{suffix}"
    return f


def twins(body, **options):
    """Return ``(serial, parallel)`` compilations of ``body`` (extra jit `options` for both),
    each with its own cache files."""
    serial = njit(cache=True, nogil=True, **options)(_renamed(body, "serial"))
    parallel = njit(cache=True, nogil=True, parallel=True, **options)(
        _renamed(body, "parallel"))
    return serial, parallel


def _require_c_contiguous_python(*arrays):
    """Without JIT (``NUMBA_DISABLE_JIT=1``) there are no layouts to check."""


@intrinsic
def _require_c_contiguous_intrinsic(typingctx, *arrays):
    bad = [a for a in arrays if isinstance(a, nbtypes.Array) and a.layout != "C"]
    if bad:
        raise TypingError("fastbp kernels need C-contiguous arrays, got "
                          + ", ".join(map(str, bad))
                          + "; pass np.ascontiguousarray(...) (inside @njit code, slice "
                            "rows as x[a:b], not x[a:b, :])")

    def codegen(context, builder, signature, args):
        return context.get_dummy_value()
    return nbtypes.none(nbtypes.StarArgTuple.from_types(arrays)), codegen


#: Compile-time check for Numba code: a TypingError unless every array argument is typed
#: C-contiguous (layout ``'C'``). Kernels that address memory by flat offsets (BLAS calls,
#: the intrinsics of ._sparse) would otherwise misread a strided view; inside ``@njit`` code
#: ``x[a:b, :]`` is typed ``'A'`` even when its memory is contiguous, so pass
#: ``np.ascontiguousarray(...)`` or ``x[a:b]``. An intrinsic, not an overload: it emits no
#: code and is not a function of its own, which an overload was (compiled and linked
#: once per argument tuple; about 0.2 s of a cold start, docs/decisions/cold-start.md).
require_c_contiguous = (_require_c_contiguous_python if config.DISABLE_JIT
                        else _require_c_contiguous_intrinsic)
