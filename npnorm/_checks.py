"""Argument validation shared by every layer.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong value)
with a message that names the argument, what was expected and what was received, so that a learner
can fix the call without reading the library's source.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

__all__ = [
    "as_float_array",
    "check_eps",
    "check_momentum",
    "check_positive_int",
    "check_ndim",
    "check_channels",
    "normalize_shape",
    "check_dout",
    "check_cache",
    "check_param",
    "check_device",
    "resolve_dtype",
    "check_min_ndim",
    "check_nc_input",
    "check_batch_stats",
    "check_running_stats",
    "check_groups",
    "check_spatial",
    "check_trailing",
    "check_rows_input",
    "check_adain_input",
]


def as_float_array(x: object, name: str = "x", where: str = "") -> np.ndarray:
    """Return ``x`` as a floating-point NumPy array, or raise a clear ``TypeError``.

    Integer, boolean, complex and object arrays are rejected rather than silently cast: normalizing
    integers almost always means the caller forgot to convert images or labels to float.
    """
    prefix = f"{where}: " if where else ""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{prefix}{name} must be a floating-point array (float32 or float64), "
            f"got dtype {arr.dtype}; convert it first, e.g. {name}.astype(np.float32)"
        )
    return arr


def check_eps(eps: object, name: str = "eps", where: str = "") -> float:
    """``eps`` must be a finite real number > 0."""
    prefix = f"{where}: " if where else ""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{prefix}{name} must be a positive float, got {eps!r}")
    value = float(eps)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{prefix}{name} must be > 0 (it keeps the division finite), got {eps!r}")
    return value


def check_momentum(momentum: object, where: str = "") -> float | None:
    """``momentum`` must be ``None`` (cumulative average) or a number in [0, 1]."""
    prefix = f"{where}: " if where else ""
    if momentum is None:
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"{prefix}momentum must be a float in [0, 1] or None, got {momentum!r}")
    value = float(momentum)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{prefix}momentum must be in [0, 1] or None, got {momentum!r}")
    return value


def check_positive_int(value: object, name: str, where: str = "") -> int:
    """``value`` must be an integer >= 1 (bools are not integers here)."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{prefix}{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{prefix}{name} must be >= 1, got {value!r}")
    return int(value)


def check_ndim(x: np.ndarray, allowed: Sequence[int], layout: str, name: str = "x", where: str = "") -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is one of ``allowed``.

    ``layout`` describes the expected shapes in words, e.g. ``"(N, C, H, W)"``.
    """
    prefix = f"{where}: " if where else ""
    allowed = tuple(allowed)
    if x.ndim not in allowed:
        dims = " or ".join(map(str, allowed)) if len(allowed) <= 2 else f"{allowed[0]}-{allowed[-1]}"
        raise ValueError(f"{prefix}expected {name} of shape {layout} ({dims}-D), got a {x.ndim}-D array of shape {x.shape}")


def check_channels(x: np.ndarray, expected: int, arg: str, axis: int = 1, name: str = "x", where: str = "") -> None:
    """Raise ``ValueError`` unless ``x.shape[axis] == expected``; ``arg`` names the constructor argument."""
    prefix = f"{where}: " if where else ""
    if x.shape[axis] != expected:
        raise ValueError(
            f"{prefix}{name} has {x.shape[axis]} channels (shape {x.shape}, axis {axis}) "
            f"but the layer was built with {arg}={expected}"
        )


def normalize_shape(shape: object, name: str = "normalized_shape", where: str = "") -> tuple[int, ...]:
    """Turn an int or a sequence of ints into a tuple of positive ints, as PyTorch does."""
    prefix = f"{where}: " if where else ""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{prefix}{name} must be an int or a tuple of ints, got {shape!r}") from None
    if len(dims) == 0:
        raise ValueError(f"{prefix}{name} must have at least one dimension, got {shape!r}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
            raise ValueError(f"{prefix}{name} must contain positive ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def check_dout(dout: object, shape: tuple[int, ...], where: str = "", name: str = "dout") -> np.ndarray:
    """The upstream gradient of a backward pass: a real floating array of exactly ``shape`` (the shape
    of the forward pass's output), or a clear ``ValueError`` / ``TypeError`` naming the layer, the
    expected shape and the given one. Never broadcast or reshaped silently."""
    arr = as_float_array(dout, name, where)
    if arr.shape != tuple(shape):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must have the shape of the forward output {tuple(shape)}, "
                         f"got {arr.shape}")
    return arr


def check_cache(dout: object, cache: object, where: str, key: str = "out_shape") -> np.ndarray:
    """The arguments of a functional backward pass ``*_backward(dout, cache)``: ``cache`` must be the
    dict the matching forward function returned (it records the output's shape under ``key``) and
    ``dout`` a real floating array of that shape (:func:`check_dout`)."""
    if not isinstance(cache, dict) or key not in cache:
        raise TypeError(f"{where}: cache must be the dict returned by the matching forward function, "
                        f"got {type(cache).__name__}")
    return check_dout(dout, cache[key], where)


def check_param(value: object, shape: tuple[int, ...], name: str, where: str = "") -> np.ndarray | None:
    """An optional parameter (``None`` = absent) as a **private float64 copy** of exactly ``shape``.

    A copy, so that a cache holding it never changes when the caller edits the array afterwards
    (parameters are small: the copy costs nothing next to the activations)."""
    if value is None:
        return None
    arr = as_float_array(value, name, where)
    if arr.shape != tuple(shape):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must have shape {tuple(shape)}, got {arr.shape}")
    return np.array(arr, dtype=np.float64, copy=True)


def check_device(device: object, where: str = "") -> None:
    """``device`` (accepted for PyTorch's constructor signatures): npnorm computes with NumPy on the
    CPU, so only ``None`` and ``"cpu"`` (or an object whose ``str`` is ``"cpu"``) are valid."""
    if device is None or str(device) == "cpu":
        return
    prefix = f"{where}: " if where else ""
    raise ValueError(f"{prefix}device must be None or 'cpu' (npnorm computes with NumPy on the CPU), got {device!r}")


def resolve_dtype(dtype: object, where: str = "") -> np.dtype:
    """The parameter/buffer dtype: ``None`` means float64 (npnorm's default; PyTorch's is float32);
    otherwise a floating dtype."""
    if dtype is None:
        return np.dtype(np.float64)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not np.issubdtype(dt, np.floating):
        prefix = f"{where}: " if where else ""
        raise TypeError(f"{prefix}dtype must be a floating dtype (np.float32, np.float64) or None, got {dtype!r}")
    return dt


def check_min_ndim(x: np.ndarray, ndim: int, layout: str, name: str = "x", where: str = "") -> None:
    """Raise ``ValueError`` unless ``x`` has at least ``ndim`` dimensions."""
    if x.ndim < ndim:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}expected {name} of shape {layout} (at least {ndim}-D), "
                         f"got a {x.ndim}-D array of shape {x.shape}")


def check_nc_input(x: object, weight: object, bias: object, eps: object, where: str):
    """Shared argument checks of the functional forms (NumPy reference and Numba twin): ``x`` a
    floating ``(N, C, *)`` array with ``C >= 1``, ``weight``/``bias`` ``None`` or of shape ``(C,)``
    (returned as private float64 copies), ``eps > 0``."""
    x = as_float_array(x, "x", where)
    check_min_ndim(x, 2, "(N, C, *)", "x", where)
    c = x.shape[1]
    if c == 0:
        raise ValueError(f"{where}: x must have at least one channel (axis 1), got shape {x.shape}")
    return (x, check_param(weight, (c,), "weight", where), check_param(bias, (c,), "bias", where),
            check_eps(eps, where=where))


def check_batch_stats(x: np.ndarray, where: str) -> int:
    """The number ``m`` of values per channel; batch statistics need ``m != 1`` (PyTorch raises the
    same error). ``m = 0`` (an empty batch) is allowed: the output is empty."""
    m = x.size // x.shape[1]
    if m == 1:
        raise ValueError(
            f"{where}: expected more than 1 value per channel when using batch statistics, got input of "
            f"shape {x.shape} (the variance of one value is undefined); use a larger batch or call .eval()"
        )
    return m


def check_running_stats(x: np.ndarray, running_mean: object, running_var: object, where: str):
    """Running statistics for an evaluation-mode forward: float arrays of shape ``(C,)``, variance >= 0
    (private float64 copies)."""
    c = x.shape[1]
    rm = check_param(running_mean, (c,), "running_mean", where)
    rv = check_param(running_var, (c,), "running_var", where)
    if rm is None or rv is None:
        raise TypeError(f"{where}: running_mean and running_var are required (arrays of shape ({c},))")
    if np.any(rv < 0):
        raise ValueError(f"{where}: running_var must be >= 0, got {rv}")
    return rm, rv


def check_channel_groups(x: np.ndarray, groups: object, where: str, name: str = "groups") -> int:
    """``groups`` of the channels of ``x`` (N, C, *): a positive int dividing ``C``, or a clear error
    (a group-by-group kernel would leave the channels past the last whole group unwritten, a reshape
    would mix channels of different groups)."""
    g = check_positive_int(groups, name, where)
    c = x.shape[1]
    if c % g:
        raise ValueError(f"{where}: {name}={g} must divide the {c} channels of x (shape {x.shape})")
    return g


def check_groups(x: np.ndarray, num_groups: object, where: str) -> int:
    """``num_groups`` for GroupNorm of ``x`` (N, C, *): a positive int dividing ``C``
    (:func:`check_channel_groups`).

    PyTorch 2.13's rule for degenerate groups, followed exactly: it raises only when the whole input
    holds one value per group (``N * (C / G) * spatial == 1``: one sample whose every group has one
    element). With several samples, groups of one element are accepted and normalize to 0, so
    ``y = bias`` - an odd rule (the statistics are per sample, not over the batch), kept for
    agreement with PyTorch."""
    g = check_channel_groups(x, num_groups, where, "num_groups")
    if x.size // g == 1:
        raise ValueError(f"{where}: expected more than 1 value per group, got input of shape {x.shape} with "
                         f"num_groups={g} (one sample whose groups hold one value each: PyTorch raises too)")
    return g


def check_spatial(x: np.ndarray, where: str, shape: tuple[int, ...] | None = None) -> int:
    """Instance statistics need more than one spatial element per channel (PyTorch raises the same
    error; ``x`` of shape (N, C, *spatial)). An empty batch is fine."""
    m = int(np.prod(x.shape[2:], dtype=np.int64))
    if m == 1:
        raise ValueError(f"{where}: expected more than 1 spatial element per channel when using instance "
                         f"statistics, got input of shape {shape if shape is not None else x.shape}")
    return m


def check_trailing(x: np.ndarray, normalized_shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The trailing axes of ``x`` that must equal ``normalized_shape`` (LayerNorm, RMSNorm)."""
    k = len(normalized_shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != tuple(normalized_shape):
        raise ValueError(
            f"{where}: the trailing dimensions of x must equal normalized_shape={tuple(normalized_shape)}, "
            f"got x of shape {x.shape}"
        )
    return tuple(range(x.ndim - k, x.ndim))


def check_rows_input(x: object, normalized_shape: object, params: dict, eps: object, where: str,
                     eps_none: bool = False):
    """Shared checks of the LayerNorm/RMSNorm functional forms (reference and Numba twin): ``x``
    floating, its trailing dimensions ``normalized_shape``, each parameter ``None`` or of shape
    ``normalized_shape`` (private float64 copies), ``eps > 0`` (or ``None`` when allowed)."""
    x = as_float_array(x, "x", where)
    normalized_shape = normalize_shape(normalized_shape, where=where)
    check_trailing(x, normalized_shape, where)
    checked = {k: check_param(v, normalized_shape, k, where) for k, v in params.items()}
    eps = None if (eps is None and eps_none) else check_eps(eps, where=where)
    return x, normalized_shape, checked, eps


def check_adain_input(content: object, style: object, eps: object, where: str):
    """AdaIN's inputs (functional forms and class): floating ``content`` ``(N, C, *spatial)`` and
    ``style`` ``(N or 1, C, *spatial')`` with the same number of dimensions and channels, more than
    one spatial element each (the statistics of one value are undefined), and ``eps > 0``."""
    content = as_float_array(content, "content", where)
    style = as_float_array(style, "style", where)
    for name, arr in (("content", content), ("style", style)):
        if arr.ndim < 3:
            raise ValueError(f"{where}: expected {name} of shape (N, C, *spatial) with at least one spatial "
                             f"dimension, got shape {arr.shape}")
        if int(np.prod(arr.shape[2:], dtype=np.int64)) < 2:
            raise ValueError(f"{where}: {name} needs more than 1 spatial element per channel, got shape {arr.shape}")
    if style.ndim != content.ndim:
        raise ValueError(f"{where}: content and style must have the same number of dimensions, got shapes "
                         f"{content.shape} and {style.shape}")
    if style.shape[1] != content.shape[1]:
        raise ValueError(f"{where}: content has {content.shape[1]} channels but style has {style.shape[1]} "
                         f"(shapes {content.shape} and {style.shape})")
    if style.shape[0] not in (1, content.shape[0]):
        raise ValueError(f"{where}: style batch size must be 1 or equal the content's ({content.shape[0]}), "
                         f"got shapes {content.shape} and {style.shape}")
    return content, style, check_eps(eps, where=where)
