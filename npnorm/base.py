"""The layer contract shared by every npnorm layer.

A layer is thin bookkeeping around a pair of pure functions (``*_forward`` returning ``(out, cache)``
and ``*_backward`` taking ``(dout, cache)``). The class holds

* ``params``: the learnable arrays, under PyTorch's names (``"weight"``, ``"bias"``, ...);
* ``grads``: the gradients of the last ``backward`` call, under the same names (each call replaces
  them; PyTorch accumulates into ``.grad``);
* buffers as plain attributes (``running_mean``, ``running_var``, ``num_batches_tracked``);
* ``training``: switched by :meth:`Module.train` and :meth:`Module.eval`.

``y = layer(x)`` runs the forward pass and keeps what the backward pass needs;
``dx = layer.backward(dy)`` returns the input gradient (a tuple when the layer has several inputs)
and fills ``layer.grads``.

Correct by construction: every subclass's ``forward`` is wrapped so that the layer records the shape
of the output it returned and its cache holds no view of an array that can be edited before
``backward`` (an input, the output, a parameter, a buffer: such views are replaced by copies), and every ``backward`` so that the upstream gradient is validated against
it (:func:`npnorm._checks.check_dout`) before the layer's own code sees it: a ``dout`` of another
shape raises a ``ValueError`` naming the layer, the expected and the given shape, and a
non-floating one a ``TypeError`` - never a silent broadcast or reshape. A layer added later gets
both without writing a line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import functools

import numpy as np

from ._checks import check_dout

__all__ = ["Module"]


_FORWARD_DOC = """The forward pass of {name}; ``layer(x)`` calls it.

        Returns the output (the input's shape for a normalizer) and keeps in the layer what
        :meth:`backward` needs. In training mode a layer with running statistics also updates them;
        after ``.eval()`` it uses them instead. The equations, shapes, conventions and the errors
        raised are in the class docstring."""

_BACKWARD_DOC = """The backward pass of {name}: the gradients of the last forward pass.

        ``dout`` is the gradient of the loss with respect to the output of the last :meth:`forward`
        call (the same shape, a real floating dtype; anything else raises ``ValueError``). Returns
        the gradient with respect to the input (a tuple when the layer has several inputs) and
        stores the gradient of every learnable parameter in ``self.grads``, under the names of
        ``self.params``, replacing those of an earlier call (PyTorch adds into ``.grad`` until
        ``zero_grad()``; here two calls do not add up)."""


def _arrays(obj: Any) -> Iterator[np.ndarray]:
    """Every NumPy array in a (nested) tuple, list or dict."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _arrays(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _arrays(o)


def _private(cache: Any, external: list[np.ndarray]) -> Any:
    """``cache`` with every array that shares memory with an ``external`` one replaced by a copy.

    The external arrays are the caller's (the inputs, the returned output) and the layer's own
    (parameters, buffers): the caller and the optimizer may edit them in place between ``forward`` and
    ``backward``, and the gradient must not change when they do. Arrays the layer made for itself
    are kept as they are (no copy, no cost)."""
    if isinstance(cache, np.ndarray):
        if cache.size and any(e.size and np.may_share_memory(cache, e) for e in external):
            return cache.copy()
        return cache
    if isinstance(cache, dict):
        return {k: _private(v, external) for k, v in cache.items()}
    if isinstance(cache, tuple):
        return tuple(_private(v, external) for v in cache)
    if isinstance(cache, list):
        return [_private(v, external) for v in cache]
    return cache


def _output_shape(out: Any) -> Any:
    """The shape of a forward output (a tuple of shapes for a tuple of arrays; None when not an array)."""
    if isinstance(out, np.ndarray):
        return out.shape
    if isinstance(out, tuple) and out and all(isinstance(o, np.ndarray) for o in out):
        return tuple(o.shape for o in out)
    return None


def _recording_forward(forward):
    @functools.wraps(forward)
    def wrapped(self, *inputs, **kwargs):
        out = forward(self, *inputs, **kwargs)
        self._out_shape = _output_shape(out)
        cache = self.__dict__.get("_cache")
        if cache is not None:
            # the cache is the layer's own: nothing in it may be a view of an array someone else can
            # edit before backward (inputs, output, parameters, buffers)
            external = [*_arrays((inputs, kwargs, out)), *_arrays(self.params),
                        *(v for v in self.__dict__.values() if isinstance(v, np.ndarray))]
            self._cache = _private(cache, external)
        return out
    wrapped._npnorm_wrapped = True
    return wrapped


def _checked_backward(backward):
    @functools.wraps(backward)
    def wrapped(self, *args, **kwargs):
        shape = self.__dict__.get("_out_shape")
        if not args and "dout" in kwargs:                   # backward(dout=...) is checked too
            args, kwargs = (kwargs.pop("dout"),), kwargs
        if args and shape is not None and self._cache is not None:
            where = f"{type(self).__name__}.backward"
            if shape and isinstance(shape[0], tuple):       # several outputs
                dout = args[0]
                if isinstance(dout, (tuple, list)):         # one gradient per output: check each
                    if len(dout) != len(shape):
                        raise ValueError(f"{where}: expected {len(shape)} upstream gradients (one per "
                                         f"output, shapes {shape}), got {len(dout)}")
                    args = (tuple(check_dout(d, s, where, f"dout[{i}]") for i, (d, s) in
                                  enumerate(zip(dout, shape))),) + args[1:]
                # a single array for a several-output layer: its own convention, its own check
            else:
                args = (check_dout(args[0], shape, where),) + args[1:]
        return backward(self, *args, **kwargs)
    wrapped._npnorm_wrapped = True
    return wrapped


class Module:
    """Base class of every npnorm layer.

    Subclasses implement :meth:`forward` (store what backward needs in ``self._cache``) and
    :meth:`backward`. Containers override :meth:`children`.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap a subclass's ``forward`` (it records the output's shape) and ``backward`` (it validates
        ``dout`` against that shape), and give them a docstring when they have none, so that
        ``help(npnorm.LayerNorm)`` documents them."""
        super().__init_subclass__(**kwargs)
        for kind, text in (("forward", _FORWARD_DOC), ("backward", _BACKWARD_DOC)):
            method = cls.__dict__.get(kind)
            if method is not None and not getattr(method, "__doc__", None):
                try:
                    method.__doc__ = text.format(name=cls.__name__.lstrip("_"))
                except (AttributeError, TypeError):  # pragma: no cover - a builtin or a slot
                    pass
        # wrap the methods this class defines (inherited ones are wrapped already); functools.wraps
        # carries the docstring over
        for name, wrap in (("forward", _recording_forward), ("backward", _checked_backward)):
            fn = cls.__dict__.get(name)
            if callable(fn) and not getattr(fn, "_npnorm_wrapped", False):
                setattr(cls, name, wrap(fn))

    def __init__(self) -> None:
        self._out_shape: Any = None
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training: bool = True
        self._cache: Any = None

    # -- running ---------------------------------------------------------------------------
    def __call__(self, *inputs: Any) -> Any:
        return self.forward(*inputs)

    def forward(self, *inputs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dout: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def _require_cache(self) -> Any:
        """Return the cache of the last forward, or raise if there was none."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): run y = layer(x) first "
                "(the backward pass needs the values the forward pass stored)"
            )
        return self._cache

    # -- modes -----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Switch this layer (and its children) to training mode; returns ``self``."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Switch this layer (and its children) to evaluation mode; returns ``self``."""
        return self.train(False)

    # -- traversal -------------------------------------------------------------------------
    def children(self) -> list[Module]:
        """Direct sub-layers (containers override this)."""
        return []

    def modules(self) -> Iterator[Module]:
        """This layer and every layer below it, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """``(qualified_name, array)`` for every parameter, e.g. ``("0.weight", W)``."""
        for key, value in self.params.items():
            yield prefix + key, value
        for i, child in enumerate(self.children()):
            yield from child.named_parameters(f"{prefix}{i}.")

    def zero_grad(self) -> None:
        """Forget the gradients of the last backward pass (in this layer and its children)."""
        for m in self.modules():
            m.grads = {}

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        inner = self.extra_repr()
        kids = self.children()
        if not kids:
            return f"{type(self).__name__}({inner})"
        lines = [f"{type(self).__name__}({inner}"]
        for i, child in enumerate(kids):
            lines.append("  " + f"({i}): " + repr(child).replace("\n", "\n  "))
        lines.append(")")
        return "\n".join(lines)
