"""What makes a function an experiment: a name, a one-line description, a quick and a full setting,
a seed, a progress bar, and plain data out (writable as JSON).

An experiment is a function ``fn(quick: bool = True, seed: int = 0, **options) -> dict`` that returns
plain data (numbers, lists, dicts, strings). Registering it with :func:`experiment` makes it a
command::

    python -m npnorm.experiments --list
    python -m npnorm.experiments NAME [--quick | --full] [--seed S] [--jobs N] [--json FILE]

The book calls the same functions (always ``quick=True``), so the command's JSON holds the numbers a
chapter's plots are made of.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = ["Experiment", "EXPERIMENTS", "experiment", "progress", "show_progress", "to_jsonable",
           "one_blas_thread", "worker_processes", "progress_map"]

T = TypeVar("T")


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``fn(quick=..., seed=...) -> dict`` plus what the command shows."""

    name: str
    fn: Callable[..., dict[str, Any]]
    description: str
    chapter: str
    module: str

    def __call__(self, quick: bool = True, seed: int = 0, **options: Any) -> dict[str, Any]:
        return self.fn(quick=quick, seed=seed, **options)


#: name -> Experiment, in registration order (the order of ``--list``).
EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, description: str, chapter: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Register ``fn`` as the experiment ``name`` (a command-line word: lowercase, dashes).

    ``description`` is the one line ``--list`` prints; ``chapter`` the book chapter that shows it.
    The function must accept ``quick`` and ``seed`` keywords and return plain data. It runs under
    :func:`one_blas_thread`, however it is called (the command, the book, a test).
    """
    if not name or name != name.lower() or " " in name or "_" in name:
        raise ValueError(f"experiment name must be lowercase words joined by dashes, got {name!r}")

    def register(fn: Callable[..., T]) -> Callable[..., T]:
        if name in EXPERIMENTS:
            raise ValueError(f"an experiment named {name!r} is already registered")
        import inspect
        params = inspect.signature(fn).parameters
        missing = [p for p in ("quick", "seed") if p not in params]
        if missing:
            raise TypeError(f"experiment {name!r}: {fn.__name__} must take keyword(s) {missing}")
        @functools.wraps(fn)
        def run_on_one_blas_thread(*args: Any, **kwargs: Any) -> T:
            with one_blas_thread():
                return fn(*args, **kwargs)

        EXPERIMENTS[name] = Experiment(name, run_on_one_blas_thread, description, chapter, fn.__module__)
        return run_on_one_blas_thread

    return register


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, BLAS uses one thread (the previous setting is restored afterwards).

    The experiments' models are small: a (32, 128) x (128, 512) product spends more time waking and
    synchronizing a second thread than computing (measured on this project's 2-core machines: 0.1 ms
    on one thread, up to 17 ms on two when the other core was busy). Every registered experiment runs
    under this policy (threadpoolctl, which knows every BLAS NumPy may be linked against)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


_PROGRESS = {"enabled": False}


@contextmanager
def show_progress(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`progress` draws bars (the command turns them on; the book and the
    tests leave them off)."""
    old = _PROGRESS["enabled"]
    _PROGRESS["enabled"] = enabled
    try:
        yield
    finally:
        _PROGRESS["enabled"] = old


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """``items`` wrapped in a tqdm bar on standard error when progress is shown, else unchanged."""
    if not _PROGRESS["enabled"]:
        return items
    from tqdm import tqdm

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return tqdm(items, desc=desc, total=total, file=sys.stderr, leave=True, dynamic_ncols=True)


_WORKERS = {"n": 1}


@contextmanager
def worker_processes(n: int = 1) -> Iterator[None]:
    """Within the block, :func:`progress_map` runs its jobs in ``n`` worker processes (the command's
    ``--jobs N``; the book and the tests use one process unless a test asks otherwise)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"worker_processes: n must be a positive integer, got {n!r}")
    old = _WORKERS["n"]
    _WORKERS["n"] = n
    try:
        yield
    finally:
        _WORKERS["n"] = old


def _call_on_one_blas_thread(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    with one_blas_thread():
        return fn(*args, **kwargs)


def progress_map(fn: Callable[..., T], jobs: list[tuple[tuple[Any, ...], dict[str, Any]]],
                 desc: str) -> list[T]:
    """``[fn(*args, **kwargs) for args, kwargs in jobs]`` with a progress bar, in job order.

    Under :func:`worker_processes` ``(n > 1)`` the jobs run in ``n`` fresh processes (the ``spawn``
    start method: forking a process whose OpenMP runtime already started can hang), each on one BLAS
    thread. The results are the same as in one process provided every job seeds its own random
    generator from its arguments, which is how the experiments are written; ``fn`` must be a
    module-level function (it is pickled). Times measured inside a job then share the machine with
    the other workers."""
    n = min(_WORKERS["n"], len(jobs))
    if n <= 1:
        return [fn(*a, **k) for a, k in progress(jobs, desc)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_call_on_one_blas_thread, fn, a, k) for a, k in jobs]
        for _ in progress(as_completed(futures), desc, total=len(futures)):
            pass
        return [f.result() for f in futures]


def to_jsonable(obj: Any) -> Any:
    """Plain data as JSON can hold it: NumPy scalars and arrays to Python numbers and lists, tuples to
    lists, tuple keys to ``"a|b"`` strings, other keys to strings, NaN and infinities to ``None``."""
    if isinstance(obj, dict):
        return {("|".join(str(k) for k in key) if isinstance(key, tuple) else str(key)): to_jsonable(v)
                for key, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"experiment results must be plain data; cannot write {type(obj).__name__} as JSON")
