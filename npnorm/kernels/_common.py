"""Shared settings of the Numba kernels: compile flags, the parallel threshold, chunking.

Compile flags
    Every kernel is compiled with ``cache=True`` (the machine code is stored in ``NUMBA_CACHE_DIR``
    and reused by the next process) and ``fastmath={'reassoc', 'nsz', 'contract'}``:

    * ``reassoc`` lets LLVM split a reduction ``acc += x[i]`` over several vector lanes and
      accumulators. Without it every add waits for the previous one (the latency of one
      floating-point add per element), which is several times slower than memory.
    * ``contract`` allows fused multiply-add; ``nsz`` ignores the sign of zero.
    * Deliberately **not** ``fastmath=True``: that would also assume no NaN and no Inf (``nnan``,
      ``ninf``), and a NaN in the input must come out as NaN, not as garbage.

    Numba's disk cache does not key on these flags: after changing them, delete the cache folder.

Serial and parallel
    Each kernel family has a *body* that processes a range of rows (or channels) serially, and a
    parallel *driver* that splits the rows into contiguous chunks and runs the body on each chunk in
    a ``prange`` loop. Inputs with fewer than :data:`PARALLEL_THRESHOLD` elements call the body
    directly, so they never pay for starting the parallel loop.
"""

from __future__ import annotations

import os

# Numba's default threading layer here is GNU OpenMP, whose idle threads spin-wait by default. On a
# machine whose cores are shared with other processes (CI runners, laptops, the 2-core machines this
# project is built on), a spinning main thread keeps a descheduled worker from running until the
# scheduler's time slice ends: measured here, a parallel LayerNorm fell from ~35 GB/s to ~4 GB/s.
# PASSIVE makes waiting threads sleep instead. Set before the OpenMP runtime starts (it reads the
# variable once); a value the user already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["FASTMATH", "PARALLEL_THRESHOLD", "JIT_DISABLED", "use_parallel", "num_chunks", "jit", "pjit"]

#: LLVM fast-math flags used by every kernel (reassociation for vectorized reductions, FMA, no
#: signed zeros); NaN and Inf keep their IEEE meaning.
FASTMATH = {"reassoc", "nsz", "contract"}

#: Inputs with at least this many elements use the parallel drivers (about
#: 512 x 768 elements: below it, starting the threads costs more than it
#: saves on this kind of machine).
PARALLEL_THRESHOLD = 512 * 768

#: True when ``NUMBA_DISABLE_JIT=1``: the kernels then run as plain (slow)
#: Python.
JIT_DISABLED = bool(numba.config.DISABLE_JIT)

#: Serial kernel: compiled on first call, cached on disk.
jit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
#: Parallel driver: as :data:`jit` plus ``parallel=True`` (``prange`` loops
#: run on all threads).
pjit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True, parallel=True)


def use_parallel(size: int) -> bool:
    """Whether an input of ``size`` elements goes to the parallel driver."""
    return size >= PARALLEL_THRESHOLD and numba.get_num_threads() > 1


def num_chunks(n_rows: int) -> int:
    """Number of contiguous row chunks for the parallel drivers: one per thread (at most one per row)."""
    return max(1, min(n_rows, numba.get_num_threads()))


def as_f64(a: np.ndarray | None, shape: tuple[int, ...], fill: float) -> np.ndarray:
    """A parameter as a private contiguous float64 array of ``shape`` (``fill`` when the parameter
    is absent). Always a copy, never a view of the caller's array: a cache holding it must not
    change when the caller edits the parameter between the forward and the backward pass
    (parameters are small, the copy costs nothing next to the activations)."""
    if a is None:
        return np.full(shape, fill, dtype=np.float64)
    return np.array(a, dtype=np.float64, order="C").reshape(shape)


def as_input(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` as a C-contiguous array of ``shape`` in its own dtype (float32/float64), no copy if possible."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64 if x.dtype.itemsize > 4 else np.float32)
    return np.ascontiguousarray(x).reshape(shape)


def ncs(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(N, C, S)`` for an ``(N, C, *spatial)`` shape, ``S`` the product of the spatial sizes (explicit,
    so that an empty batch reshapes too: NumPy cannot infer ``-1`` for an array of size 0)."""
    return int(shape[0]), int(shape[1]), int(np.prod(shape[2:], dtype=np.int64))


def keep_buffer(x: np.ndarray, x_view: np.ndarray, keep_out: np.ndarray | None = None) -> np.ndarray | None:
    """An array for a kernel to copy ``x_view`` into while it reads it, when ``x_view`` is (a view of)
    the caller's array ``x``; ``None`` when :func:`as_input` already made a private copy.

    Caches of the backward passes hold that copy, never the caller's array: editing the input after
    the forward pass must not change the gradient (the copy is fused into a pass that reads ``x``
    anyway, so it costs one write of ``x``, no extra read). ``keep_out`` is a buffer to reuse (the
    layers pass the one of their previous cache, which the new forward pass replaces): fresh large
    arrays cost page faults on every call."""
    if not np.may_share_memory(x, x_view):
        return None
    if (isinstance(keep_out, np.ndarray) and keep_out.size == x_view.size and keep_out.dtype == x_view.dtype
            and keep_out.flags.c_contiguous and keep_out.flags.writeable
            and not np.may_share_memory(keep_out, x)):
        return keep_out.reshape(x_view.shape)
    return np.empty_like(x_view)


def keep_args(x: np.ndarray, x_view: np.ndarray, keep_out: np.ndarray | None = None):
    """``(keep, buffer, do_keep)`` for a kernel that copies ``x_view`` while it reads it: the buffer
    of :func:`keep_buffer` (or ``None``), the array the kernel gets (an empty placeholder with
    ``x_view``'s number of dimensions when there is nothing to copy) and the flag."""
    keep = keep_buffer(x, x_view, keep_out)
    buffer = keep if keep is not None else np.empty((0,) * x_view.ndim, x_view.dtype)
    return keep, buffer, keep is not None


def reusable_keep(cache: object) -> dict:
    """``{"keep_out": buffer}`` when ``cache`` (a layer's previous Numba cache, about to be replaced)
    owns a private copy of its input that the next forward pass may overwrite; ``{}`` otherwise."""
    if isinstance(cache, tuple):                      # BatchNorm / InstanceNorm wrap their cache
        cache = next((c for c in cache if isinstance(c, dict)), None)
    if isinstance(cache, dict) and cache.get("backend") == "numba" and cache.get("owns_x"):
        return {"keep_out": cache["x"]}
    return {}


def as_upstream(dout: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The upstream gradient, contiguous, in the input's ``dtype`` (a float64 ``dout`` for a float32
    input is rounded to float32: the kernels are compiled for one dtype per call)."""
    return np.ascontiguousarray(np.asarray(dout), dtype=dtype).reshape(shape)


def check_out(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype, name: str = "out") -> np.ndarray:
    """Allocate the output, or check that a preallocated one fits (shape, dtype, C-contiguous)."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.size != int(np.prod(shape)) \
            or not out.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array with "
                         f"{int(np.prod(shape))} elements, got {getattr(out, 'dtype', type(out))} "
                         f"of shape {getattr(out, 'shape', None)}")
    return out.reshape(shape)


def restore(y: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A kernel result in the caller's shape and dtype (the kernels compute float16 input as float32,
    and return it as float16, as the reference does)."""
    return y.reshape(shape).astype(dtype, copy=False)


def run_reusing(fn, kernel_fn, old_cache: object, *args):
    """``fn(*args)``; when ``fn`` is the Numba entry point ``kernel_fn``, it may overwrite the private
    input copy of ``old_cache`` (:func:`reusable_keep`) - the layers call this with the cache their
    forward pass is about to replace."""
    return fn(*args, **(reusable_keep(old_cache) if fn is kernel_fn else {}))
