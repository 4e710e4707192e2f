"""Zero-skipping building blocks for the batch <= SMALL_BATCH training step, in LLVM IR.

MNIST-like inputs are ~80 % zeros, so at batch 1 the step's two large products touch only
the rows of W1 whose input is non-zero. Written as plain Numba loops, both products were
slow (figures in docs/decisions/small-batch-zero-skipping.md):

- the scan for non-zeros mispredicts a branch on about every non-zero;
- ``h[i] += x[i, k] * W1[k]`` keeps ``h``'s row in memory, a store-to-load chain per
  non-zero, and LLVM vectorizes a 50-column row 32 columns at a time with 18 scalar ones.

Here the non-zero columns of a row are listed first, 8 inputs at a time without a branch
(compare, ``movmskps``, a table of bit positions, ``popcnt``): :func:`nonzero_columns`.
Then :func:`gather_dot` sums the listed rows of W1 with up to 64 columns of ``h`` held in
eight vector registers, and :func:`scatter_axpy`, its transpose, updates the listed rows
of W1 with the row of ``dh`` held in registers; both faster than the plain loops (figures in
docs/decisions/small-batch-zero-skipping.md).

Each output element gets its terms in list order, one multiply and one add per term,
exactly as ``h[i, j] += x[i, k] * W1[k, j]`` in a loop over ``k``: the same bits as the
plain loops (tests/test_kernels.py). Arrays that are not C-contiguous, and
``NUMBA_BOUNDSCHECK=1`` runs, compile to those plain loops; under ``NUMBA_DISABLE_JIT=1``
the public functions run as NumPy.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, overload, register_jitable

LANES = 8
#: Columns of the output held in registers per pass of :func:`gather_dot` (8 AVX registers).
BLOCKS = 8

# For each 8-bit mask, the positions of its set bits, padded with zeros.
_POSITIONS = np.zeros((256, LANES), np.int32)
for _m in range(256):
    _bits = [u for u in range(LANES) if _m >> u & 1]
    _POSITIONS[_m, :len(_bits)] = _bits
del _m, _bits


def _c_arrays(*arrays):
    return all(isinstance(a, types.Array) and a.layout == "C" for a in arrays)


def _plain(*arrays):
    """Whether an overload must take its plain-loop version: for arrays that are not
    C-contiguous (the intrinsics address flat memory), and under NUMBA_BOUNDSCHECK=1 (the
    intrinsics do not check bounds; the loops then do)."""
    return config.BOUNDSCHECK or not _c_arrays(*arrays)


def _splat(builder, value, n=LANES):
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(ir.VectorType(value.type, n), ir.Undefined),
                               value, i32(0))
    return builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                                  ir.Constant(ir.VectorType(i32, n), None))


@intrinsic
def _list8(typingctx, x, xo, col, idx, c, table):
    # idx.flat[c : c + 8] = col + the positions of the non-zeros (and NaNs) among
    # x.flat[xo : xo + 8]; returns c + their count. Writes all 8 slots of idx.
    if not (_c_arrays(x, idx, table) and isinstance(x.dtype, types.Float)
            and idx.dtype == table.dtype == types.int32):
        return None

    def codegen(context, builder, signature, args):
        xv, xo, col, iv, c, tv = args
        xa = context.make_array(signature.args[0])(context, builder, xv)
        ia = context.make_array(signature.args[3])(context, builder, iv)
        ta = context.make_array(signature.args[5])(context, builder, tv)
        fty = context.get_value_type(signature.args[0].dtype)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vty, ity = ir.VectorType(fty, LANES), ir.VectorType(i32, LANES)
        xs = builder.load(builder.bitcast(builder.gep(xa.data, [xo]), vty.as_pointer()),
                          align=fty.get_abi_size(context.target_data))
        nonzero = builder.fcmp_unordered("!=", xs, ir.Constant(vty, None))  # NaN counts
        mask = builder.zext(builder.bitcast(nonzero, ir.IntType(LANES)), i64)
        pos = builder.load(builder.bitcast(builder.gep(ta.data, [builder.mul(mask, i64(LANES))]),
                                           ity.as_pointer()), align=4)
        out = builder.bitcast(builder.gep(ia.data, [c]), ity.as_pointer())
        builder.store(builder.add(pos, _splat(builder, builder.trunc(col, i32))), out, align=4)
        count = builder.call(builder.module.declare_intrinsic("llvm.ctpop", [i64]), [mask])
        return builder.add(c, count)
    return types.int64(x, types.int64, types.int64, idx, types.int64, table), codegen


def _emit_blocks(nb, scatter, context, builder, argtys, args):
    """Emit the code for `nb` blocks of 8 columns, the last of which covers only `m` new
    columns (1 to 8): it overlaps the block before it, or is masked when it is alone.

    ``scatter=False`` (gather): ``out.flat[oo + j] = sum_p x.flat[xo + k_p] * W[k_p, col0 + j]``
    with ``k_p = idx[p]``, the sums held in registers. ``scatter=True``:
    ``W[k_p, col0 + j] += (a * x.flat[xo + k_p]) * out.flat[oo + j]`` for every p, the row
    ``out.flat[oo:]`` held in registers. `argtys` and `args`: those of the intrinsic of
    :func:`_make_kernel` after its block count.
    """
    av, xv, xo, iv, cnt, Wv, col0, ov, oo, m = args
    xa = context.make_array(argtys[1])(context, builder, xv)
    ia = context.make_array(argtys[3])(context, builder, iv)
    Wa = context.make_array(argtys[5])(context, builder, Wv)
    oa = context.make_array(argtys[7])(context, builder, ov)
    H = cgutils.unpack_tuple(builder, Wa.shape, 2)[1]
    fty = context.get_value_type(argtys[0])
    size = fty.get_abi_size(context.target_data)
    i32, i64 = ir.IntType(32), ir.IntType(64)
    vty = ir.VectorType(fty, LANES)
    mty = ir.VectorType(ir.IntType(1), LANES)
    ptr = Wa.data.type
    suffix = f"v{LANES}f{size * 8}.p0"
    mload = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [ptr, i32, mty, vty]),
        "llvm.masked.load." + suffix)
    mstore = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vty, ptr, i32, mty]),
        "llvm.masked.store." + suffix)
    lanes = ir.Constant(ir.VectorType(i64, LANES), list(range(LANES)))
    mask = builder.icmp_signed("<", lanes, _splat(builder, m))
    zero = ir.Constant(vty, None)

    # With nb >= 2 the last block is moved back to end at column m of the pass: it
    # overlaps the block before it, whose lanes it computes with the same operations
    # in the same order (the same bits, so storing both is harmless). A masked
    # store is slow on Zen 3 (docs/decisions/small-batch-zero-skipping.md); only a
    # lone block (nb == 1) is masked.
    masked = nb == 1

    def load(p, b):
        if b == nb - 1 and masked:
            return builder.call(mload, [p, i32(size), mask, zero])
        return builder.load(builder.bitcast(p, vty.as_pointer()), align=size)

    def store(v, p, b):
        if b == nb - 1 and masked:
            builder.call(mstore, [v, p, i32(size), mask])
        else:
            builder.store(v, builder.bitcast(p, vty.as_pointer()), align=size)

    offsets = [i64(LANES * b) for b in range(nb)]
    if not masked:
        offsets[-1] = builder.add(i64(LANES * (nb - 2)), m)
    xrow = builder.gep(xa.data, [xo])
    orow = builder.gep(oa.data, [oo])
    blocks = [builder.gep(orow, [off]) for off in offsets]
    held = [load(p, b) for b, p in enumerate(blocks)] if scatter else None
    first = builder.block
    loop = builder.append_basic_block("sparse.loop")
    done = builder.append_basic_block("sparse.done")
    builder.cbranch(builder.icmp_signed(">", cnt, i64(0)), loop, done)

    builder.position_at_end(loop)
    p = builder.phi(i64)
    acc = [] if scatter else [builder.phi(vty) for _ in range(nb)]
    k = builder.sext(builder.load(builder.gep(ia.data, [p])), i64)
    xk = builder.load(builder.gep(xrow, [k]))
    row = builder.gep(Wa.data, [builder.add(builder.mul(k, H), col0)])
    wps = [builder.gep(row, [off]) for off in offsets]
    if scatter:
        # All loads before the stores: the overlapping block must read the row as
        # it was, not the block before it already updated.
        s = _splat(builder, builder.fmul(av, xk))
        rows = [load(wp, b) for b, wp in enumerate(wps)]
        for b, wp in enumerate(wps):
            store(builder.fadd(rows[b], builder.fmul(s, held[b])), wp, b)
    else:
        s = _splat(builder, xk)
        new = [builder.fadd(acc[b], builder.fmul(s, load(wp, b)))
               for b, wp in enumerate(wps)]
    p1 = builder.add(p, i64(1))
    p.add_incoming(i64(0), first)
    p.add_incoming(p1, loop)
    if not scatter:
        for ab, nbv in zip(acc, new):
            ab.add_incoming(zero, first)
            ab.add_incoming(nbv, loop)
    builder.cbranch(builder.icmp_signed("<", p1, cnt), loop, done)

    builder.position_at_end(done)
    if not scatter:
        sums = []
        for b in range(nb):
            total = builder.phi(vty)
            total.add_incoming(zero, first)
            total.add_incoming(new[b], loop)
            sums.append(total)
        for b, total in enumerate(sums):
            store(total, blocks[b], b)


def _make_kernel(scatter):
    """The intrinsic ``kernel(nb, a, x, xo, idx, cnt, W, col0, out, oo, m)``: a switch on the
    block count `nb` (2 to 8; anything else runs one block) to the code :func:`_emit_blocks`
    emits for that count. Each count is a constant of its own code (its registers and loads
    unrolled), so one switch stands where an if-chain over eight intrinsics stood."""
    @intrinsic
    def kernel(typingctx, nb, a, x, xo, idx, cnt, W, col0, out, oo, m):
        if not (_c_arrays(x, idx, W, out) and x.dtype == W.dtype == out.dtype == a
                and isinstance(a, types.Float) and W.ndim == 2
                and idx.dtype == types.int32):
            return None

        def codegen(context, builder, signature, args):
            nbv = args[0]
            done = builder.append_basic_block("sparse.blocks_done")
            cases = [builder.append_basic_block(f"sparse.blocks{k}")
                     for k in range(1, BLOCKS + 1)]
            switch = builder.switch(nbv, cases[0])
            for k, case in enumerate(cases, 1):
                if k > 1:
                    switch.add_case(ir.Constant(nbv.type, k), case)
                builder.position_at_end(case)
                _emit_blocks(k, scatter, context, builder, signature.args[1:], args[1:])
                builder.branch(done)
            builder.position_at_end(done)
            return context.get_dummy_value()
        return types.void(types.int64, a, x, types.int64, idx, types.int64, W, types.int64,
                          out, types.int64, types.int64), codegen
    return kernel


def _row_pass(scatter):
    """The Numba function that runs the ``scatter`` kernel of :func:`_make_kernel` over all
    columns of ``W``: ``run(a, x, i, idx, count, W, out)``, 64 columns per pass."""
    kernel = _make_kernel(scatter)

    @register_jitable
    def run(a, x, i, idx, count, W, out):
        m = W.shape[1]
        xo = i * x.shape[1]
        for col0 in range(0, m, LANES * BLOCKS):
            cols = min(LANES * BLOCKS, m - col0)
            nb = (cols + LANES - 1) // LANES
            last = cols - LANES * (nb - 1)
            kernel(nb, a, x, xo, idx, count, W, col0, out, i * m + col0, last)
    return run


_gather_pass = _row_pass(False)
_scatter_pass = _row_pass(True)


def nonzero_columns(x, i, idx):
    """Write the column indices of the non-zero (or NaN) entries of row `i` of `x` into
    ``idx[:count]``, in increasing order, and return ``count``.

    Parameters
    ----------
    x : ndarray, (n, d), float32 or float64, C-contiguous
    i : int, a row of `x`
    idx : ndarray, int32, C-contiguous, at least ``d + 8`` elements
        Written in place; slots past ``count`` hold scratch values.
    """
    row = x[i]
    cols = np.flatnonzero(row != 0).astype(np.int32)
    idx[:cols.size] = cols
    return cols.size


@overload(nonzero_columns, jit_options={"cache": True})
def _nonzero_columns_overload(x, i, idx):
    table = _POSITIONS
    if _plain(x, idx):
        def plain(x, i, idx):
            c = 0
            for k in range(x.shape[1]):
                if x[i, k] != 0:
                    idx[c] = k
                    c += 1
            return c
        return plain

    def impl(x, i, idx):
        d = x.shape[1]
        full = d - d % LANES
        xo = i * d
        c = 0
        for k in range(0, full, LANES):
            c = _list8(x, xo + k, k, idx, c, table)
        for k in range(full, d):  # the last d % 8 inputs, branch-free as well
            idx[c] = k
            c += x[i, k] != 0  # NaN != 0 too, as in the compare above
        return c
    return impl


def gather_dot(x, i, idx, count, W, out):
    """``out[i] = sum(x[i, k] * W[k] for k in idx[:count])``, summed in the order of `idx`.

    Parameters
    ----------
    x : ndarray, (n, d), float, C-contiguous
    i : int, a row of `x` and of `out`
    idx : ndarray, int32: column indices of row `i`, from :func:`nonzero_columns`
    count : int, entries of `idx` to use
    W : ndarray, (d, m), dtype of `x`, C-contiguous
    out : ndarray, (n, m), dtype of `x`, C-contiguous; row `i` written in place
    """
    acc = np.zeros(W.shape[1], W.dtype)
    for k in idx[:count]:
        acc += x[i, k] * W[k]
    out[i] = acc


@overload(gather_dot, jit_options={"cache": True})
def _gather_dot_overload(x, i, idx, count, W, out):
    if _plain(x, idx, W, out):
        def plain(x, i, idx, count, W, out):
            for j in range(W.shape[1]):
                out[i, j] = 0
            for p in range(count):
                k = idx[p]
                for j in range(W.shape[1]):
                    out[i, j] += x[i, k] * W[k, j]
        return plain

    def impl(x, i, idx, count, W, out):
        _gather_pass(W.dtype.type(0), x, i, idx, count, W, out)  # `a` unused by a gather
    return impl


def scatter_axpy(a, x, i, idx, count, g, W):
    """``W[k] += (a * x[i, k]) * g[i]`` for each `k` in ``idx[:count]``, in that order.

    The transpose of :func:`gather_dot`: ``W += a * outer(x[i], g[i])`` restricted to the
    listed columns of `x`. Shapes as in :func:`gather_dot`, with `g` (n, m) in the place
    of `out`; `W` is updated in place.
    """
    for k in idx[:count]:
        W[k] += (a * x[i, k]) * g[i]


@overload(scatter_axpy, jit_options={"cache": True})
def _scatter_axpy_overload(a, x, i, idx, count, g, W):
    if _plain(x, idx, g, W):
        def plain(a, x, i, idx, count, g, W):
            for p in range(count):
                k = idx[p]
                s = a * x[i, k]
                for j in range(W.shape[1]):
                    W[k, j] += s * g[i, j]
        return plain

    def impl(a, x, i, idx, count, g, W):
        _scatter_pass(a, x, i, idx, count, W, g)
    return impl


@register_jitable
def list_stride(d):
    """Slots per row of the lists of :func:`gather_rows`: `d` column indices, the 8 scratch
    slots :func:`nonzero_columns` writes past them, and the count."""
    return d + LANES + 1


@register_jitable
def gather_rows(x, lists, W, out):
    """``out = x @ W`` for every row of `x` from the list of its non-zero columns.

    Row ``i``'s list is written to ``lists[i * s:(i + 1) * s]`` (``s = list_stride(d)``),
    its length to the list's last slot, for :func:`scatter_rows` to reuse.

    Parameters
    ----------
    x : ndarray, (n, d), float, C-contiguous
    lists : ndarray, int32, C-contiguous, at least ``n * list_stride(d)`` elements; written.
    W : ndarray, (d, m), dtype of `x`, C-contiguous
    out : ndarray, (n, m), dtype of `x`, C-contiguous; written.
    """
    stride = list_stride(x.shape[1])
    for i in range(x.shape[0]):
        row = lists[i * stride:(i + 1) * stride]
        count = nonzero_columns(x, i, row)
        row[stride - 1] = count
        gather_dot(x, i, row, count, W, out)


@register_jitable
def scatter_rows(a, x, lists, g, W):
    """``W += a * x.T @ g`` over the rows of `W` listed by :func:`gather_rows` (rank-1
    updates row after row of the batch, in list order): no scan of `x`."""
    stride = list_stride(x.shape[1])
    for i in range(x.shape[0]):
        row = lists[i * stride:(i + 1) * stride]
        scatter_axpy(a, x, i, row, row[stride - 1], g, W)
