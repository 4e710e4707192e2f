"""Numba's disk cache for fastbp's kernels: used when it works, never a reason to fail.

fastbp compiles its kernels with ``cache=True``: machine code is written to disk and the
next process loads it instead of compiling. Numba takes the first writable folder of
``NUMBA_CACHE_DIR``, the ``__pycache__`` next to the source, and a per-user folder
(``~/.cache/numba``). Left alone, two situations broke fastbp:

* no folder writable (a read-only install and home, some containers): Numba raised
  ``RuntimeError: cannot cache function ...: no locator available`` at ``import fastbp``;
* a write failing later (a full disk, a quota, a folder made read-only while running):
  the first call of a kernel raised ``OSError`` after compiling it.

For fastbp's own functions (nothing else in the process is touched) both now compile in
memory instead: the kernels work, the next process compiles again, and one
:class:`CacheWarning` per process says so and how to fix it. A ``NUMBA_CACHE_DIR`` that is
not writable while another folder is also gets the warning (Numba moves on silently).

An index that no longer unpickles (written by an older fastbp that had other function
names) is deleted and counts as a miss.

fastbp's cache entries are also keyed by its size thresholds
(:func:`._compile.threshold_key`): compiled code holds them as constants, and a threshold
that differs from the cached code's (after ``fastbp calibrate``, with another pool size, or
an edited constant) must compile again rather than load the old choice.

This wraps four methods of Numba's cache machinery (``Dispatcher.enable_caching``,
``CFunc.enable_caching``, ``Cache.save_overload``/``load_overload``, ``Cache._index_key``);
each wrapper calls the original and only changes what it does for functions of the
``fastbp`` package.
"""
import os
import pickle
import warnings

from numba.core import caching, ccallback, config, dispatcher

_PREFIX = __name__.split(".")[0] + "."
# Numba's locator for NUMBA_CACHE_DIR (renamed without the underscore in Numba 0.61).
_USER_DIR_LOCATOR = getattr(caching, "UserProvidedCacheLocator", None) or getattr(
    caching, "_UserProvidedCacheLocator")


class CacheWarning(RuntimeWarning):
    """Numba could not read or write its disk cache for fastbp's kernels: they are compiled
    in memory, for this process only."""


_warned = False


def _ours(py_func):
    return (getattr(py_func, "__module__", None) or "").startswith(_PREFIX)


def _warn_once(reason):
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(f"fastbp: {reason}. Kernels compiled now are kept in memory for this process "
                  "only; set NUMBA_CACHE_DIR to a writable folder with free space so the next "
                  "process can load them instead of compiling again.", CacheWarning,
                  stacklevel=4)


def _wrap_enable_caching(cls, func_attr):
    original = cls.enable_caching

    def enable_caching(self):
        py_func = getattr(self, func_attr)
        try:
            original(self)
        except RuntimeError as e:  # no writable folder at all
            if not _ours(py_func):
                raise
            _warn_once(f"Numba has no writable cache folder ({e})")
            self._cache = caching.NullCache()
            return
        locator = getattr(getattr(self._cache, "_impl", None), "locator", None)
        if (_ours(py_func) and config.CACHE_DIR and locator is not None
                and not isinstance(locator, _USER_DIR_LOCATOR)):
            _warn_once(f"NUMBA_CACHE_DIR={config.CACHE_DIR} is not writable; Numba caches in "
                       f"{self._cache.cache_path} instead")

    enable_caching.__wrapped__ = original
    cls.enable_caching = enable_caching


def _wrap_io(name, on_error):
    original = getattr(caching.Cache, name)

    def method(self, *args):
        try:
            return original(self, *args)
        except OSError as e:
            if not _ours(self._py_func):
                raise
            self.disable()  # this function's cache only; nothing half-written is read
            _warn_once(f"Numba could not {on_error} its cache in {self.cache_path} "
                       f"({os.strerror(e.errno) if e.errno else e})")
            return None
        except (AttributeError, ImportError, ReferenceError, pickle.UnpicklingError):
            # An index written by an older fastbp can name a function since renamed or
            # removed (an overload's pickled type), and unpickling it fails; one holding a
            # Dispatcher type from another process fails to pickle again once that rebuilt
            # dispatcher was collected (ReferenceError, "underlying object has vanished";
            # the unreleased inlined run_twins' index). Drop the stale index: a miss, the
            # function compiles and is cached again.
            if not _ours(self._py_func):
                raise
            try:
                os.remove(self._cache_file._index_path)
            except OSError:
                pass
            return None if name == "load_overload" else original(self, *args)

    method.__wrapped__ = original
    setattr(caching.Cache, name, method)


def _wrap_index_key():
    original = caching.Cache._index_key

    def _index_key(self, sig, codegen):
        key = original(self, sig, codegen)
        if not _ours(self._py_func):
            return key
        from ._compile import threshold_key  # imported after this module, used after both
        return key + (threshold_key(),)

    _index_key.__wrapped__ = original
    caching.Cache._index_key = _index_key


if not getattr(caching.Cache.save_overload, "__wrapped__", None):  # once per process
    _wrap_enable_caching(dispatcher.Dispatcher, "py_func")
    _wrap_enable_caching(ccallback.CFunc, "_pyfunc")
    _wrap_io("save_overload", "write")
    _wrap_io("load_overload", "read")
    _wrap_index_key()
