r"""Put a weight normalizer in front of any layer, as ``torch.nn.utils.parametrizations`` does.

``spectral_norm(layer)``, ``weight_norm(layer)`` and ``weight_standardization(layer)`` take any
:class:`~npnorm.base.Module` with a parameter ``params["weight"]`` (``npnorm.nn.Linear``,
``npnorm.nn.Conv2d``, your own layer) and return a :class:`ParametrizedModule`. Its forward pass

1. computes the normalized weight from the raw parameters (``W_sn = sn()``; in training mode this
   runs spectral norm's power iteration),
2. puts it in the wrapped layer (``layer.params["weight"] = W_sn``) and runs the layer;

its backward pass runs the layer's backward, then sends the layer's weight gradient through the
normalizer's backward (the chain rule: :math:`\partial L/\partial W = J^\top\,\partial L/\partial W_{sn}`).

The wrapper owns the parameters, under PyTorch's names: the layer's other parameters keep their
names (``"bias"``) and the raw weight becomes

======================  ===============================================================
spectral_norm           ``"parametrizations.weight.original"``
weight_norm             ``"parametrizations.weight.original0"`` (g), ``"...original1"`` (v)
weight_standardization  ``"parametrizations.weight.original"``
======================  ===============================================================

``wrapper.params`` is a live view: reading or assigning ``wrapper.params[name]`` reads or writes
the array the normalizer (or the layer) uses, so an optimizer loop over ``params`` / ``grads``
just works. The normalizer itself is ``wrapper.parametrizations.weight`` (for its ``u``, ``v``,
``sigma``), the wrapped layer ``wrapper.module``; the normalized weight of the last forward pass is
``wrapper.weight``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..base import Module
from .spectralnorm import SpectralNorm
from .weightnorm import WeightNorm
from .weightstd import WeightStandardization

__all__ = ["ParametrizedModule", "spectral_norm", "weight_norm", "weight_standardization", "wrapper_spec"]


class _ParamView(MutableMapping):
    """``wrapper.params``: the wrapped layer's parameters (minus the normalized one) and the
    normalizer's, under their public names; reads and writes go to the underlying dicts."""

    def __init__(self, owner: ParametrizedModule) -> None:
        self._owner = owner

    def _targets(self) -> dict[str, tuple[Module, str]]:
        o = self._owner
        out = {k: (o.module, k) for k in o.module.params if k != o.name}
        for public, inner in o.originals.items():
            out[public] = (o.parametrization, inner)
        return out

    def __getitem__(self, key: str) -> np.ndarray:
        holder, inner = self._locate(key)
        return holder.params[inner]

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        holder, inner = self._locate(key)
        holder.params[inner] = value

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"the parameters of a {type(self._owner).__name__} cannot be deleted ({key!r})")

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._targets()))

    def __len__(self) -> int:
        return len(self._targets())

    def _locate(self, key: str) -> tuple[Module, str]:
        targets = self._targets()
        if key not in targets:
            raise KeyError(f"{key!r} is not a parameter of this {type(self._owner).__name__}; "
                           f"its parameters are {list(targets)}")
        return targets[key]

    def __repr__(self) -> str:
        return repr({k: v for k, v in self.items()})


class ParametrizedModule(Module):
    """A layer whose parameter ``name`` is computed by a normalizer (see the module docstring).

    Use :func:`spectral_norm`, :func:`weight_norm` or :func:`weight_standardization` to build one.
    ``y = wrapper(*inputs)``; ``dx = wrapper.backward(dy)`` returns what the layer's backward returns
    and fills ``wrapper.grads`` under the names of ``wrapper.params``.
    """

    def __init__(self, module: Module, name: str, parametrization: Module, originals: Mapping[str, str]) -> None:
        super().__init__()
        self.module = module
        self.name = name
        self.parametrization = parametrization
        #: public name -> name inside the normalizer's params
        self.originals = dict(originals)
        self.parametrizations = SimpleNamespace(**{name: parametrization})
        self.params = _ParamView(self)  # type: ignore[assignment]
        self.training = module.training
        parametrization.train(module.training)

    @property
    def weight(self) -> np.ndarray:
        """The normalized weight used by the last forward pass."""
        if self.name not in self.module.params:
            raise RuntimeError(f"run a forward pass first: the normalized {self.name} is computed by forward()")
        return self.module.params[self.name]

    def children(self) -> list[Module]:
        return self.module.children()

    @property
    def training(self) -> bool:  # type: ignore[override]
        """The mode; setting it sets the wrapped layer's and the normalizer's too, so a container's
        ``eval()`` (which sets ``training`` on every module it reaches) also stops spectral norm's
        power iteration."""
        return self._training

    @training.setter
    def training(self, mode: bool) -> None:
        self._training = bool(mode)
        for part in ("module", "parametrization"):
            if part in self.__dict__:
                getattr(self, part).train(self._training)

    def train(self, mode: bool = True) -> ParametrizedModule:
        super().train(mode)
        self.module.train(mode)
        self.parametrization.train(mode)
        return self

    def forward(self, *inputs: Any) -> Any:
        self.module.params[self.name] = self.parametrization()
        out = self.module(*inputs)
        self._cache = True
        return out

    def backward(self, dout: np.ndarray) -> Any:
        self._require_cache()
        dx = self.module.backward(dout)
        if self.name not in self.module.grads:
            raise RuntimeError(f"{type(self.module).__name__}.backward did not fill grads[{self.name!r}]")
        self.parametrization.backward(self.module.grads[self.name])
        grads = {k: v for k, v in self.module.grads.items() if k != self.name}
        for public, inner in self.originals.items():
            grads[public] = self.parametrization.grads[inner]
        self.grads = grads
        return dx

    def extra_repr(self) -> str:
        return f"{self.name}: {self.parametrization!r}, module={self.module!r}"


def _take_weight(module: object, name: str, where: str) -> np.ndarray:
    if not isinstance(module, Module):
        raise TypeError(f"{where}: expected an npnorm Module (a layer with params), got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"{where}: name must be a str, got {name!r}")
    if name not in module.params:
        raise ValueError(f"{where}: {type(module).__name__} has no parameter {name!r}; its parameters are "
                         f"{list(module.params)}")
    return module.params.pop(name)


def spectral_norm(
    module: Module,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    dim: int | None = None,
    *,
    exact: bool = False,
    seed: int | np.random.Generator | None = None,
) -> ParametrizedModule:
    """Spectral normalization of ``module.params[name]`` (PyTorch's ``parametrizations.spectral_norm``).

    ``dim=None`` means 0, or 1 when the layer's class name contains ``ConvTranspose`` (whose weight
    is ``(in, out, kh, kw)``), as in PyTorch. The raw weight becomes
    ``params["parametrizations.<name>.original"]``; ``u``, ``v``, ``sigma`` live on
    ``wrapper.parametrizations.<name>``. See :class:`~npnorm.weights.spectralnorm.SpectralNorm`.
    """
    weight = _take_weight(module, name, "spectral_norm")
    if dim is None:
        dim = 1 if "ConvTranspose" in type(module).__name__ else 0
    try:
        sn = SpectralNorm(weight, n_power_iterations, eps, dim, exact=exact, seed=seed)
    except Exception:
        module.params[name] = weight
        raise
    return ParametrizedModule(module, name, sn, {f"parametrizations.{name}.original": "weight"})


def weight_norm(module: Module, name: str = "weight", dim: int | None = 0) -> ParametrizedModule:
    """Weight normalization of ``module.params[name]`` (PyTorch's ``parametrizations.weight_norm``).

    ``g`` becomes ``params["parametrizations.<name>.original0"]`` and ``v``
    ``params["parametrizations.<name>.original1"]``; at creation the weight is unchanged.
    See :class:`~npnorm.weights.weightnorm.WeightNorm`.
    """
    weight = _take_weight(module, name, "weight_norm")
    try:
        wn = WeightNorm(weight, dim)
    except Exception:
        module.params[name] = weight
        raise
    return ParametrizedModule(module, name, wn, {f"parametrizations.{name}.original0": "g",
                                                 f"parametrizations.{name}.original1": "v"})


def weight_standardization(module: Module, name: str = "weight", eps: float | None = None,
                           convention: str = "timm") -> ParametrizedModule:
    """Weight standardization of ``module.params[name]`` per output channel (no PyTorch equivalent;
    timm's ``StdConv2d`` is ``weight_standardization(Conv2d(...))`` with ``eps=1e-6``).
    See :class:`~npnorm.weights.weightstd.WeightStandardization`."""
    weight = _take_weight(module, name, "weight_standardization")
    try:
        ws = WeightStandardization(weight, eps, convention)
    except Exception:
        module.params[name] = weight
        raise
    return ParametrizedModule(module, name, ws, {f"parametrizations.{name}.original": "weight"})


def converge_spectral_norm(wrapper: ParametrizedModule) -> None:
    """Set the ``u``, ``v`` of every spectral norm inside ``wrapper`` to the exact top singular vectors
    of the current raw weight (the power iteration's fixed point). Used by gradient checks."""
    sn = wrapper.parametrization
    if isinstance(sn, SpectralNorm):
        left, _, right_t = np.linalg.svd(sn._matrix())
        sn.u, sn.v = left[:, 0], right_t[0]


def wrapper_spec(
    name: str,
    wrap: Callable[..., ParametrizedModule],
    make_module: Callable[[Any, np.random.Generator, Any], Module],
    cases: tuple,
    wrap_kwargs: Mapping[str, Any] | None = None,
    **spec_fields: Any,
):
    """A registry :class:`~npnorm.registry.Spec` for ``wrap(make_module(case, rng, dtype), **kwargs)``.

    ``make_module(case, rng, dtype)`` builds the layer to wrap; a case's ``kwargs`` go to ``wrap``
    (after ``wrap_kwargs``); its ``input_shapes`` are the layer's inputs. Spectral-norm vectors are
    set to the exact singular vectors after the weights are randomized (see
    :func:`converge_spectral_norm`), so that the train-mode check is exact. For example, once
    ``npnorm.nn`` exists::

        register(wrapper_spec("spectral_norm(Linear)", spectral_norm,
                              lambda case, rng, dtype: nn.Linear(6, 4),
                              cases=(Case("linear", {}, ((5, 6),)),), reference="Miyato et al., 2018"))
    """
    from ..registry import Spec

    def make_layer(case: Any, rng: np.random.Generator, dtype: Any, kwargs: dict[str, Any]) -> ParametrizedModule:
        merged = dict(wrap_kwargs or {})
        merged.update(kwargs)
        return wrap(make_module(case, rng, dtype), **merged)

    def setup(layer: ParametrizedModule, rng: np.random.Generator) -> None:
        converge_spectral_norm(layer)

    spec_fields.setdefault("signature_twin", wrap)
    return Spec(name=name, cls=ParametrizedModule, cases=cases, make_layer=make_layer, setup=setup, **spec_fields)
