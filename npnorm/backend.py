"""Which implementation a layer runs: the readable NumPy reference or the fused Numba kernels.

Every layer of the core families (BatchNorm, LayerNorm, RMSNorm, GroupNorm, InstanceNorm, AdaIN)
takes a keyword-only ``backend`` argument:

* ``"numba"`` - the fused kernels of :mod:`npnorm.kernels` (the default: fast);
* ``"numpy"`` - the NumPy reference functions the book teaches (``layer_norm_forward`` etc.);
* ``None`` (the default value of the argument) - whatever the global default is *when the layer
  runs*, so switching the default also switches layers built earlier.

The global default starts as ``"numba"``, or as the value of the environment variable
``NPNORM_BACKEND`` if it is set. Switch it with :func:`set_backend`, or temporarily::

    with npnorm.use_backend("numpy"):
        y = layer(x)          # runs the NumPy reference

Both backends compute the same function (agreement is tested to 1e-12 in float64); the caches they
keep for the backward pass differ, and each layer's ``backward`` uses the one its forward made.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["BACKENDS", "get_backend", "set_backend", "use_backend", "check_backend", "resolve_backend", "pick",
           "pick_for_cache"]

#: The backends a layer can run on.
BACKENDS = ("numpy", "numba")


def check_backend(name: object, where: str = "", allow_none: bool = False) -> str | None:
    """Return ``name`` if it is a known backend (or ``None`` when allowed); raise ``ValueError`` otherwise."""
    if name is None and allow_none:
        return None
    if not isinstance(name, str) or name not in BACKENDS:
        prefix = f"{where}: " if where else ""
        extra = " or None (the global default)" if allow_none else ""
        raise ValueError(f"{prefix}backend must be one of {BACKENDS!r}{extra}, got {name!r}")
    return name


_default: str = check_backend(os.environ.get("NPNORM_BACKEND", "numba"), "NPNORM_BACKEND")


def get_backend() -> str:
    """The global default backend (``"numba"`` unless changed)."""
    return _default


def set_backend(name: str) -> None:
    """Set the global default backend: ``"numba"`` or ``"numpy"`` (process-wide)."""
    global _default
    _default = check_backend(name, "set_backend")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Context manager: use backend ``name`` as the default inside the ``with`` block, then restore
    the previous default (also on an exception). It changes the process-wide default, so do not use
    it from several threads at once."""
    global _default
    previous, _default = _default, check_backend(name, "use_backend")
    try:
        yield name
    finally:
        _default = previous


def resolve_backend(name: str | None) -> str:
    """A layer's backend: its own if given, else the global default at this moment."""
    return get_backend() if name is None else name


def pick(backend: str | None, numpy_impl, numba_impl):
    """The implementation for a layer whose ``backend`` attribute is ``backend`` (None = global default)."""
    return numba_impl if resolve_backend(backend) == "numba" else numpy_impl


def pick_for_cache(cache: dict, numpy_impl, numba_impl):
    """The backward implementation matching the forward that made ``cache``."""
    return numba_impl if cache.get("backend") == "numba" else numpy_impl
