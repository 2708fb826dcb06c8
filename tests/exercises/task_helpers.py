"""Checks with learner-readable verdicts, shared by the exercise task tests.

Every failure raises :class:`TaskFailure`, whose message is exactly what ``python -m npnorm.check``
prints: for a wrong value, the first mismatching element and its expected value; for a wrong gradient,
npnorm.gradcheck's report (which input, the worst relative error, where, the expected range, a hint).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from npnorm.exercises import SOLUTIONS_DIR, load_module
from npnorm.gradcheck import GradcheckReport, check_gradients


UPSTREAM_SEED_OFFSET = 7919


class TaskFailure(AssertionError):
    """A verdict on the learner's code; the message is shown as is by ``npnorm.check``."""


def rand(shape: Sequence[int], seed: int, offset: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """float64 ``offset + scale * N(0, 1)`` (an offset and a scale catch bugs standard normals hide)."""
    return offset + scale * np.random.default_rng(seed).standard_normal(tuple(shape))


def rand_param(shape: Sequence[int], seed: int) -> np.ndarray:
    """Random non-trivial scale parameters: magnitudes in [0.5, 1.5], random signs (gamma = 1 hides bugs)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, tuple(shape)) * rng.choice([-1.0, 1.0], tuple(shape))


def unpack(result: Any, names: Sequence[str], func: str) -> tuple[Any, ...]:
    """The return value of ``func`` as a tuple of ``len(names)`` items, or a clear failure."""
    expected = "(" + ", ".join(names) + ")"
    if not isinstance(result, tuple) or len(result) != len(names):
        got = f"a tuple of {len(result)} values" if isinstance(result, tuple) else type(result).__name__
        raise TaskFailure(f"{func} must return {expected}; it returned {got}.")
    return result


def expect_close(name: str, got: Any, expected: Any, *, rtol: float = 1e-7, atol: float = 1e-10,
                 context: str = "", hint: str = "") -> None:
    """Fail with the first mismatching element of ``got`` unless it is close to ``expected``."""
    expected = np.asarray(expected, dtype=np.float64)
    if got is None:
        raise TaskFailure(f"{name} is None; expected an array of shape {expected.shape}.")
    got_arr = np.asarray(got)
    if got_arr.shape != expected.shape:
        raise TaskFailure(f"{name} has shape {got_arr.shape}, expected {expected.shape}. {context}".rstrip())
    got64 = got_arr.astype(np.float64)
    bad = ~np.isclose(got64, expected, rtol=rtol, atol=atol)
    bad |= ~np.isfinite(got64)
    if not bad.any():
        return
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    where = f"index {idx}" if idx else "the value"
    msg = (f"{name} is wrong: first mismatch at {where}: you have {got64[idx]:.6g}, expected "
           f"{expected[idx]:.6g} ({int(bad.sum())} of {bad.size} elements differ by more than "
           f"rtol={rtol:g}, atol={atol:g}).")
    if context:
        msg += f" {context}"
    if hint:
        msg += f"\nhint: {hint}"
    raise TaskFailure(msg)


def format_gradcheck(report: GradcheckReport) -> str:
    """A gradient-check report that fits the check's page width (79 columns, indented): the table
    without the value columns, then one line per wrong gradient with the values where it is worst."""
    width = max([10] + [len(c.name) + 2 for c in report.comparisons])
    lines = [f"Gradient check {'passed' if report.passed else 'FAILED'} for {report.label}",
             f"(float64, {report.upstream} upstream gradient, tolerance {report.tolerance:.0e})",
             f"  {'gradient':<{width}}{'shape':<14}{'max rel. error':<17}worst index"]
    for c in report.comparisons:
        flag = "ok" if c.passed else "FAIL"
        lines.append(f"  {c.name:<{width}}{str(c.shape):<14}{c.max_rel_error:<9.2e}{flag:<8}{c.worst_index}")
    lines += [f"  problem: {p}" for p in report.problems]
    for c in report.comparisons:
        if not c.passed:
            lines.append(f"-> d{c.name} is wrong: at index {c.worst_index} your backward gives "
                         f"{c.analytic_at_worst:.6g}, central differences give {c.numeric_at_worst:.6g}. "
                         f"A correct float64 backward scores below {c.tolerance:.0e} (typically 1e-12 to 1e-9).")
            if c.hint:
                lines.append(f"   hint: {c.hint}")
    return "\n".join(lines)


def expect_gradients(label: str, forward: Callable[..., Any], backward: Callable[..., Any],
                     inputs: Mapping[str, Any], *, forward_name: str, backward_name: str,
                     output_names: Sequence[str] | None = None, seed: int = 0,
                     same_shape_output: bool = True, **kwargs: Any) -> GradcheckReport:
    """Gradient-check ``backward`` against central differences of ``forward`` (npnorm.gradcheck: float64,
    random upstream, fourth-order stencil) for every array in ``inputs``.

    Shapes are checked first, so that a wrong shape is reported as such (not as rows of NaN): the
    forward's output must have the shape of the first input (``same_shape_output``, true for every
    normalizer) - the upstream gradient is made with the output's shape - and every returned
    gradient must have its argument's shape."""
    arrays = [k for k, v in inputs.items() if isinstance(v, np.ndarray)]
    names = list(output_names) if output_names else ["d" + k for k in arrays]
    first = arrays[0]
    want_out = np.shape(inputs[first])

    def fw(**kw: Any) -> tuple[np.ndarray, Any]:
        out, cache = unpack(forward(**kw), ("out", "cache"), forward_name)
        if same_shape_output and np.shape(out) != want_out:
            raise TaskFailure(
                f"{forward_name} returns out of shape {np.shape(out)}, but for {first} of shape {want_out} "
                f"it must have the same shape. The upstream gradient dout has the output's shape, so "
                f"{backward_name} cannot be checked until the forward pass gets the shape right.")
        return np.asarray(out, dtype=np.float64), cache

    def bw(dout: np.ndarray, cache: Any) -> tuple[Any, ...]:
        grads = backward(dout, cache)
        if len(names) == 1 and not isinstance(grads, tuple):
            grads = (grads,)
        grads = unpack(grads, names, backward_name)
        for name, arg, grad in zip(names, arrays, grads):
            if np.shape(grad) != np.shape(inputs[arg]):
                raise TaskFailure(
                    f"{backward_name} returns {name} of shape {np.shape(grad)}, expected "
                    f"{np.shape(inputs[arg])}: the gradient of {arg} has the shape of {arg} "
                    f"(for {label}). Fix the shape first; the values are compared after.")
        return grads

    # The upstream gradient's generator must differ from the inputs': with the same seed, dout would be
    # an affine function of x and the true input gradient of a normalizer would vanish (a blind check).
    report = check_gradients(fw, bw, inputs, seed=UPSTREAM_SEED_OFFSET + seed, label=label,
                             raise_on_failure=False, **kwargs)
    if not report.passed:
        raise TaskFailure(format_gradcheck(report))
    for comp in report.comparisons:   # a test bug, not the learner's: a gradient check must be able to fail
        assert np.nanmax(np.abs(comp.numeric)) > 1e-6, f"degenerate gradient check: d{comp.name} is ~0 ({label})"
    return report


# -- mutation tests: a plausible mistake in a copy of a solution --------------------------------------

def mutated_solution(chapter: str, old: str, new: str, tmp_dir: Path) -> ModuleType:
    """Load a copy of ``solutions/<chapter>.py`` in which the source text ``old`` (which must occur
    exactly once, inside a task region) is replaced by ``new`` - a plausible learner mistake."""
    text = (SOLUTIONS_DIR / f"{chapter}.py").read_text(encoding="utf-8")
    count = text.count(old)
    if count != 1:
        raise AssertionError(f"mutation target {old!r} occurs {count} times in solutions/{chapter}.py")
    path = Path(tmp_dir) / f"{chapter}.py"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return load_module(path, fresh=True)


def failure_message(check: Callable[[], Any]) -> str:
    """Run a task check that must fail; return its message (for the mutation tests)."""
    try:
        check()
    except TaskFailure as exc:
        return str(exc)
    raise AssertionError("the task check passed on a wrong implementation: it cannot catch this mistake")


def mentions(message: str, *patterns: str) -> bool:
    return all(re.search(p, message) for p in patterns)


# --- the catalogue of common mistakes -------------------------------------------------------------
# Every chapter's task test module (tests/exercises/test_chN_*.py) defines a module-level
# ``MISTAKES: list[Mistake]``: for each task, the mistakes learners commonly make, each as the wrong
# implementation itself. ``npnorm.check`` recognizes a mistake by running the wrong implementation on
# the task's inputs and comparing with the learner's result, and prints the mistake's own message;
# the mutation tests plant each catalogued mistake into a copy of the solutions and assert that the
# check names it.

from dataclasses import dataclass as _dataclass  # noqa: E402


@_dataclass(frozen=True)
class Mistake:
    """One common mistake of one task.

    task : the task id (``"2.3"``).
    name : a short id, unique within the task (``"missing-mean-term"``).
    function : the name of the task's function that the mistake is made in (``"batchnorm_backward_fused"``).
    wrong : a callable with that function's signature that returns what the mistake produces.
    message : what the check prints when it recognizes the mistake: names it and says how to fix it.
    """

    task: str
    name: str
    function: str
    wrong: Callable[..., Any]
    message: str


# --- recognizing a catalogued mistake -----------------------------------------------------------
# While a task's tests run, every task function named by one of the task's mistakes is wrapped so
# that its first few calls are recorded: a copy of the arguments, and what the learner's code
# returned (or the exception it raised). When the task fails, every catalogued wrong implementation
# is run on the same recorded arguments; a mistake whose results agree with the learner's on every
# recorded call is named (tests/exercises/conftest.py does this around every task test).

import copy as _copy  # noqa: E402
import functools as _functools  # noqa: E402
from types import ModuleType as _ModuleType  # noqa: E402

RECORDED_CALLS = 3


def _copy_value(value: Any) -> Any:
    try:
        return _copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - a value that cannot be copied is kept as it is
        return value


@_dataclass
class Call:
    """One recorded call of a learner's function: the arguments as they were before it ran, and its
    result or the exception it raised (as ``(type name, message)``)."""

    args: tuple
    kwargs: dict
    result: Any = None
    raised: tuple[str, str] | None = None


class Recorder:
    """Wraps functions of an implementation module and records their first calls."""

    def __init__(self, module: _ModuleType, functions: Sequence[str], limit: int = RECORDED_CALLS) -> None:
        self.module = module
        self.limit = limit
        self.calls: dict[str, list[Call]] = {name: [] for name in functions}
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> "Recorder":
        for name in self.calls:
            original = getattr(self.module, name, None)
            if original is None or not callable(original):
                continue
            self._saved[name] = original
            setattr(self.module, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._saved.items():
            setattr(self.module, name, original)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        calls = self.calls[name]

        @_functools.wraps(original)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if len(calls) >= self.limit:
                return original(*args, **kwargs)
            call = Call(_copy_value(args), _copy_value(kwargs))
            try:
                result = original(*args, **kwargs)
            except Exception as exc:
                call.raised = (type(exc).__name__, str(exc))
                calls.append(call)
                raise
            call.result = _copy_value(result)
            calls.append(call)
            return result

        return recorded


def same_result(a: Any, b: Any, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    """Whether two results agree: arrays and numbers elementwise (NaN equals NaN), tuples and lists item
    by item. Dicts (caches) are not compared: a cache's layout is the learner's choice."""
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict)
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(same_result(x, y, rtol, atol) for x, y in zip(a, b)))
    if a is None or b is None:
        return a is None and b is None
    try:
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return False
        if x.dtype.kind in "biufc" and y.dtype.kind in "biufc":
            return bool(np.allclose(x.astype(np.complex128), y.astype(np.complex128), rtol=rtol, atol=atol,
                                    equal_nan=True))
        return bool(np.all(x == y))
    except Exception:  # noqa: BLE001
        return False


def _reproduces(mistake: Mistake, calls: Sequence[Call]) -> bool:
    """Whether the wrong implementation gives what the learner's code gave on every recorded call.
    Calls that raised must raise the same exception with the same message, and at least one call must
    have returned (an exception alone - a missing cache key, a shape error - is no evidence)."""
    if not calls or all(c.raised is not None for c in calls):
        return False
    for call in calls:
        try:
            got = mistake.wrong(*_copy_value(call.args), **_copy_value(call.kwargs))
        except Exception as exc:  # noqa: BLE001
            if call.raised != (type(exc).__name__, str(exc)):
                return False
            continue
        if call.raised is not None or not same_result(call.result, got):
            return False
    return True


def recognize(mistakes: Sequence[Mistake], recorder: Recorder) -> list[Mistake]:
    """The catalogued mistakes that reproduce the learner's results on every recorded call of their
    function (a mistake whose function was never called is not recognized)."""
    found = []
    for m in mistakes:
        if _reproduces(m, recorder.calls.get(m.function, [])):
            found.append(m)
    return found


def mistake_message(found: Sequence[Mistake]) -> str:
    """The lines the check prints before its own report when it recognizes a catalogued mistake."""
    if len(found) == 1:
        return f"This looks like a common mistake ({found[0].name}): {found[0].message}"
    lines = ["This looks like one of these common mistakes (your results match each of them):"]
    lines += [f"  - ({m.name}) {m.message}" for m in found]
    return "\n".join(lines)
