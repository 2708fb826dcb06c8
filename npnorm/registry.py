"""The one registry of layers: every check, benchmark and book table is driven from here.

Each layer module registers a :class:`Spec` next to the layer it describes. A spec says how to build
the layer with random, non-trivial parameters and buffers, and random valid inputs with an offset
and a scale, for a few named :class:`Case` s (shapes and constructor arguments). The test suite
gradient-checks every case of every spec in every mode it lists; a test fails if a layer exported by
``npnorm`` has no spec.

Adding a layer = writing its forward/backward, its class, and one ``register(Spec(...))`` call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Case", "Spec", "register", "REGISTRY", "FAMILIES", "specs", "spec_for", "family_of",
           "randomize_layer"]

#: The families of layers, in the order of the book's tables: subpackage name -> title.
FAMILIES: dict[str, str] = {
    "statistics": "Statistics normalizers (standardize, then affine)",
    "weights": "Weight normalizers",
    "adaptive": "Adaptive (conditional) normalizers",
    "transformer": "Normalizers of the transformer era",
    "divergence": "Affine-divergence normalizers",
    "nn": "Network building blocks",
}


def family_of(cls: type) -> str:
    """The family of a layer class: the ``npnorm`` subpackage its module is in (``""`` outside one)."""
    parts = cls.__module__.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "npnorm" and parts[1] in FAMILIES else ""


@dataclass(frozen=True)
class Case:
    """One configuration to test: constructor arguments and input shapes."""

    name: str
    kwargs: Mapping[str, Any]
    input_shapes: tuple[tuple[int, ...], ...]
    modes: tuple[str, ...] = ("train", "eval")
    #: Settings for the spec's ``make_layer`` / ``setup`` that are not constructor arguments (for
    #: example the weight shape of a weight normalizer, or the state its buffers start in).
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """How to build, check and describe one layer class.

    Attributes
    ----------
    name : str
        The public name (``"BatchNorm2d"``).
    cls : type
        The layer class.
    cases : tuple of Case
        Configurations to check; each lists the modes (``"train"``, ``"eval"``) to check it in.
    family : str
        The family the layer belongs to, one of :data:`FAMILIES` (``"statistics"``, ``"weights"``,
        ``"adaptive"``, ``"transformer"``, ``"divergence"``, or ``"nn"`` for network building
        blocks). Left empty, it is read from the package the class is defined in
        (``npnorm.statistics.batchnorm`` -> ``"statistics"``), so a layer's family is where its file is.
    pytorch : str or None
        The PyTorch equivalent, or None when PyTorch has none.
    reduces_over : str
        In words, the set the statistics are taken over (for the book's tables).
    differences : str
        Deliberate differences from PyTorch ("" when there are none).
    input_names : tuple of str
        Names under which input gradients are reported.
    constant_inputs : tuple of str
        The names (among ``input_names``) of inputs that are not differentiated: integer class
        labels or style indices (conditional BatchNorm, an embedding table). ``make_inputs`` makes
        them (integers); :meth:`inputs` does not cast them to the build's dtype; the gradient check
        passes them unchanged and never perturbs them; the layer's ``backward`` returns gradients for
        the other inputs only, in order (a single array when one remains, ``None`` when none does).
    input_offset, input_scale : float
        Inputs are ``offset + scale * N(0, 1)``: a non-zero mean and a non-unit spread catch bugs
        that standard-normal inputs hide.
    make_inputs : callable, optional
        ``(case, rng, dtype) -> tuple of arrays``, overriding the default random inputs. Integer
        arrays (token ids) are kept as integers and treated as non-differentiable inputs: the
        gradient check passes them through unchanged, and ``backward`` returns ``None`` for them.
    make_layer : callable, optional
        ``(case, rng, dtype, kwargs) -> layer``, replacing ``cls(**kwargs)`` for layers whose
        constructor needs arrays (the weight normalizers are built from the weight they normalize,
        and have no inputs: ``input_names=()`` and cases with ``input_shapes=()``). ``kwargs`` is the
        case's constructor arguments with the overrides applied; ``dtype`` is the dtype the build
        asks for (for a layer without inputs, the dtype of the weight and so of the output).
    setup : callable, optional
        ``(layer, rng) -> None`` or ``(layer, rng, case) -> None`` (when it takes three arguments),
        run after :func:`randomize_layer`, for layer-specific state.
    gradcheck : dict
        Extra keyword arguments for :func:`npnorm.gradcheck.check_layer` (``h``, ``stencil``, ...).
    backends : tuple of str
        Backends the layer offers (the backend-agreement tests cover all of them).
    reference : str
        The paper (author, year) for the book's tables.
    batch_axis : int or None
        The axis of every input that holds the batch (default 0). The reliability tests
        (``tests/test_reliability.py``) feed the layer an empty batch along it; ``None`` means the
        layer has no batch axis (the empty-batch test then skips it).
    signature_twin : callable or str, optional
        The npnorm callable whose signature must accept the PyTorch twin's full constructor
        signature (``pytorch``, up to the first parenthesis), or its dotted import path (for a
        function defined in a module that imports this one). Default: ``cls``. The weight
        normalizers' twins are PyTorch functions taking a module, mirrored by
        :func:`npnorm.weights.parametrize.weight_norm` etc., not by the classes.
    """

    name: str
    cls: type
    cases: tuple[Case, ...]
    family: str = ""
    pytorch: str | None = None
    reduces_over: str = ""
    differences: str = ""
    input_names: tuple[str, ...] = ("x",)
    constant_inputs: tuple[str, ...] = ()
    input_offset: float = 5.0
    input_scale: float = 3.0
    make_inputs: Callable[[Case, np.random.Generator, Any], tuple[np.ndarray, ...]] | None = None
    make_layer: Callable[[Case, np.random.Generator, Any, dict[str, Any]], Any] | None = None
    setup: Callable[..., None] | None = None
    gradcheck: Mapping[str, Any] = field(default_factory=dict)
    backends: tuple[str, ...] = ("numpy",)
    reference: str = ""
    batch_axis: int | None = 0
    signature_twin: Callable[..., Any] | str | None = None

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", family_of(self.cls))
        unknown = set(self.constant_inputs) - set(self.input_names)
        if unknown:
            raise ValueError(f"{self.name}: constant_inputs {sorted(unknown)} are not in input_names "
                             f"{self.input_names}")
        if self.constant_inputs and self.make_inputs is None:
            raise ValueError(f"{self.name}: constant (integer) inputs need a make_inputs that draws them")

    @property
    def differentiable_inputs(self) -> tuple[str, ...]:
        """``input_names`` without ``constant_inputs``: the inputs ``backward`` returns gradients for."""
        return tuple(n for n in self.input_names if n not in self.constant_inputs)

    def twin(self) -> Callable[..., Any]:
        """The callable that mirrors the PyTorch twin's signature (:attr:`signature_twin`, resolved)."""
        if isinstance(self.signature_twin, str):
            import importlib
            module, _, attr = self.signature_twin.rpartition(".")
            return getattr(importlib.import_module(module), attr)
        return self.signature_twin or self.cls

    def case(self, name: str) -> Case:
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no case {name!r}; cases: {[c.name for c in self.cases]}")

    def inputs(self, case: Case, rng: np.random.Generator, dtype: Any = np.float64) -> tuple[np.ndarray, ...]:
        """Random valid inputs for ``case``."""
        if self.make_inputs is not None:
            # constant inputs (class labels, token ids) stay as made: named in constant_inputs, or integers
            made = self.make_inputs(case, rng, dtype)
            return tuple(np.asarray(a) if name in self.constant_inputs
                         or np.issubdtype(np.asarray(a).dtype, np.integer) else np.asarray(a, dtype=dtype)
                         for name, a in zip(self.input_names, made))
        return tuple((self.input_offset + self.input_scale * rng.standard_normal(s)).astype(dtype)
                     for s in case.input_shapes)

    def build(self, case: Case | str, seed: int | np.random.Generator = 0, dtype: Any = np.float64,
              mode: str = "train", **overrides: Any) -> tuple[Any, tuple[np.ndarray, ...]]:
        """Build ``(layer, inputs)`` for a case: random non-trivial parameters and buffers, random inputs.

        ``overrides`` are extra constructor arguments (for example ``backend="numba"``). The same seed
        gives the same layer and inputs, whatever the overrides.
        """
        if isinstance(case, str):
            case = self.case(case)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        kwargs = dict(case.kwargs)
        kwargs.update(overrides)
        if self.make_layer is not None:
            layer = self.make_layer(case, rng, dtype, kwargs)
        else:
            # layers that draw their own initial values take an ``rng``: derive it from the build's
            # generator, so that the same seed always builds the same layer
            if "rng" not in kwargs and "rng" in inspect.signature(self.cls).parameters:
                kwargs["rng"] = int(rng.integers(2**63))
            layer = self.cls(**kwargs)
        randomize_layer(layer, rng)
        if self.setup is not None:
            if len(inspect.signature(self.setup).parameters) >= 3:
                self.setup(layer, rng, case)
            else:
                self.setup(layer, rng)
        inputs = self.inputs(case, rng, dtype)
        if mode == "eval":
            layer.eval()
        elif mode != "train":
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        return layer, inputs


def randomize_layer(layer: Any, rng: np.random.Generator) -> None:
    """Give every parameter and running statistic of ``layer`` (and its children) random values.

    Default values such as ``weight = 1`` and ``bias = 0`` hide bugs (a gradient that forgets to
    multiply by the weight is still right when the weight is 1), so checks never use them. Parameters
    get ``value + N(0, 0.5)``; running means ``N(0, 1)``; running variances ``U(0.5, 2)``.
    """
    for m in layer.modules() if hasattr(layer, "modules") else [layer]:
        for key, value in m.params.items():
            # np.asarray keeps 0-d parameters arrays (a 0-d array plus a scalar is a NumPy scalar)
            m.params[key] = np.asarray(value + rng.normal(0.0, 0.5, np.shape(value)), dtype=value.dtype)
        if getattr(m, "running_mean", None) is not None:
            m.running_mean = rng.normal(0.0, 1.0, m.running_mean.shape).astype(m.running_mean.dtype)
        if getattr(m, "running_var", None) is not None:
            m.running_var = rng.uniform(0.5, 2.0, m.running_var.shape).astype(m.running_var.dtype)


#: name -> Spec, in registration order.
REGISTRY: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in REGISTRY:
        raise ValueError(f"a layer named {spec.name!r} is already registered")
    if spec.family not in FAMILIES:
        raise ValueError(f"{spec.name}: family must be one of {list(FAMILIES)}, got {spec.family!r} "
                         f"(define the class in npnorm/<family>/ or pass family=...)")
    home = family_of(spec.cls)
    if home and home != spec.family:
        raise ValueError(f"{spec.name}: registered as family {spec.family!r} but defined in npnorm.{home}")
    REGISTRY[spec.name] = spec
    return spec


def specs(family: str | None = None) -> list[Spec]:
    """All registered specs (of one family, if given), in registration order."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"specs: family must be one of {list(FAMILIES)}, got {family!r}")
    return [s for s in REGISTRY.values() if family is None or s.family == family]


def spec_for(cls: type) -> Spec:
    """The spec registered for a layer class."""
    for s in REGISTRY.values():
        if s.cls is cls:
            return s
    raise KeyError(f"{cls.__name__} is not registered")
