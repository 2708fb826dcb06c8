"""``Composite``: a layer made of named sub-layers, with no parameters of its own.

A transformer block is not a straight chain (residual branches, several normalizers), so it cannot
be a :class:`~npnorm.nn.Sequential`; it is a :class:`Composite` that owns named children and writes
its own ``forward``/``backward`` wiring. As in ``Sequential``, ``params`` and ``grads`` are *views*
of the children's arrays under qualified names (``"attn.in_proj.weight"``), so the gradient check
and ``state_dict``-like code see every parameter, while the optimizers update the leaves (they skip
containers whose ``params`` is a view).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..base import Module

__all__ = ["Composite"]


class Composite(Module):
    """Base class of layers built from named children (``self.add("name", layer)``)."""

    def __init__(self) -> None:
        self._named: dict[str, Module] = {}
        super().__init__()

    def add(self, name: str, module: Module) -> Module:
        """Register ``module`` as the child ``name`` (also reachable as ``self.<name>``)."""
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.add: {name!r} must be an npnorm Module, got "
                            f"{type(module).__name__}")
        if "." in name or not name:
            raise ValueError(f"{type(self).__name__}.add: child names must be non-empty without dots, got {name!r}")
        self._named[name] = module
        object.__setattr__(self, name, module)
        return module

    @property
    def params(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{n}.{k}": v for n, m in self._named.items() for k, v in m.params.items()}

    @params.setter
    def params(self, value: dict) -> None:
        if value:
            raise AttributeError(f"{type(self).__name__} has no parameters of its own; set them on its children")

    @property
    def grads(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{n}.{k}": v for n, m in self._named.items() for k, v in m.grads.items()}

    @grads.setter
    def grads(self, value: dict) -> None:
        if value:
            raise AttributeError(f"{type(self).__name__} has no gradients of its own; they live on its children")
        for m in self._named.values():
            m.grads = {}

    def children(self) -> list[Module]:
        return list(self._named.values())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._named.items()

    def named_parameters(self, prefix: str = ""):
        for k, v in self.params.items():
            yield prefix + k, v

    def __repr__(self) -> str:
        inner = self.extra_repr()
        lines = [f"{type(self).__name__}({inner}"]
        for n, child in self._named.items():
            lines.append("  " + f"({n}): " + repr(child).replace("\n", "\n  "))
        lines.append(")")
        return "\n".join(lines)
