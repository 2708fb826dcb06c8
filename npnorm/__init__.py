"""npnorm: neural-network normalization layers in NumPy, with hand-derived backward passes.

The layers are grouped by family, one subpackage each: :mod:`npnorm.statistics` (standardize, then
affine: BatchNorm, LayerNorm, RMSNorm, GroupNorm, InstanceNorm), :mod:`npnorm.weights` (weight
normalization, spectral normalization, weight standardization), :mod:`npnorm.adaptive` (the affine
map comes from a condition: AdaIN, FiLM, conditional BN/IN, AdaGN, adaLN(-Zero), the timestep
encoders), :mod:`npnorm.transformer` and :mod:`npnorm.divergence`. Their
Numba twins mirror them under :mod:`npnorm.kernels`; :mod:`npnorm.nn` has the network building
blocks, :mod:`npnorm.models` the small networks the experiments train, :mod:`npnorm.experiments`
the experiments (``python -m npnorm.experiments --list``).

Every layer is a thin class around a pair of pure functions (``*_forward`` returning ``(out, cache)``
and ``*_backward`` taking ``(dout, cache)``), named and defaulted like PyTorch, registered in
:mod:`npnorm.registry` and gradient-checked by :mod:`npnorm.gradcheck`.
"""

import importlib.util as _util
import os as _os
import sys as _sys
from pathlib import Path as _Path


def _dependencies_or_instructions() -> None:
    """Stop with instructions (not a traceback) when this Python lacks npnorm's dependencies - the
    usual cause is a ``python`` other than the project's ``.venv`` (a system Python, a notebook kernel
    started elsewhere)."""
    missing = [name for name in ("numpy", "numba") if _util.find_spec(name) is None]
    if not missing:
        return
    message = (
        f"npnorm needs {' and '.join(missing)}, which this Python ({_sys.executable}) does not have.\n"
        "Run it with the project's own environment (`make` creates .venv on first use):\n"
        "  in a terminal, from the project folder:  make check TASK=2.3   (or make test, make book;\n"
        "                                           .venv/bin/python -m npnorm.check 2.3 works too)\n"
        "  in a notebook: start JupyterLab with `make lab` and use its Python 3 kernel, then\n"
        "                 %run -m npnorm.check 2.3")
    if _sys.argv and _sys.argv[0] == "-m":      # python -m npnorm.something: no traceback
        print(message, file=_sys.stderr)
        raise SystemExit(1)
    raise ImportError(message)


_dependencies_or_instructions()

# Compiled kernels are cached outside the source tree (not in npnorm/**/__pycache__), also without
# make: in the project's .numba_cache/ (what the Makefile and the tests use), or in the user's cache
# folder when the project folder is read-only. An explicit NUMBA_CACHE_DIR wins.
if not _os.environ.get("NUMBA_CACHE_DIR"):
    _cache = _Path(__file__).resolve().parent.parent / ".numba_cache"
    if not _os.access(_cache.parent, _os.W_OK):
        _cache = _Path(_os.environ.get("XDG_CACHE_HOME") or _Path.home() / ".cache") / "npnorm" / "numba"
    _os.environ["NUMBA_CACHE_DIR"] = str(_cache)
    if "numba" in _sys.modules:             # numba read its configuration already
        _sys.modules["numba"].config.CACHE_DIR = str(_cache)

from . import gradcheck, registry  # noqa: E402
# Import order is registration order, which is the order of the book's tables: family by family.
from .backend import get_backend, set_backend, use_backend
from .base import Module
from .statistics import (BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d,
                         InstanceNorm3d, LayerNorm, RMSNorm, SyncBatchNorm, LocalResponseNorm, CrossMapLRN2d,
                         BatchRenorm1d, BatchRenorm2d, GhostBatchNorm, FilterResponseNormTlu2d,
                         EvoNorm2dB0, EvoNorm2dS0, GlobalResponseNorm, SwitchNorm2d,
                         IterNorm)
from .weights import SpectralNorm, WeightNorm, WeightStandardization, parametrize
from .adaptive import (AdaGroupNorm, AdaIN, AdaLN, AdaLNZeroBlock, ConditionalBatchNorm2d,
                       ConditionalInstanceNorm2d, FiLM, ScaleShiftGroupNorm, SinusoidalTimestepEmbedding,
                       StyleAdaIN, TimestepEmbedding)
from .transformer import DeepNorm, DyT, FixNorm, L2Norm, NGPTMLP, NGPTResidual, NGPTScale, QKNorm, ScaleNorm
from . import transformer, divergence
from .divergence import AffineLike, L2PreNorm, PatchNormConv2d, RMSPreNorm
from .gradcheck import check_gradients, check_layer
from . import nn  # noqa: E402  (registers the network layers after the normalizers)

__version__ = "0.1.0"

__all__ = [
    "Module",
    "get_backend",
    "set_backend",
    "use_backend",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "SyncBatchNorm",
    "LocalResponseNorm",
    "CrossMapLRN2d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "GhostBatchNorm",
    "FilterResponseNormTlu2d",
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "GlobalResponseNorm",
    "SwitchNorm2d",
    "IterNorm",
    "AdaIN",
    "L2PreNorm",
    "RMSPreNorm",
    "AffineLike",
    "PatchNormConv2d",
    "FiLM",
    "ConditionalBatchNorm2d",
    "ConditionalInstanceNorm2d",
    "AdaGroupNorm",
    "ScaleShiftGroupNorm",
    "StyleAdaIN",
    "AdaLN",
    "AdaLNZeroBlock",
    "SinusoidalTimestepEmbedding",
    "TimestepEmbedding",
    "L2Norm",
    "ScaleNorm",
    "FixNorm",
    "QKNorm",
    "DyT",
    "DeepNorm",
    "NGPTResidual",
    "NGPTScale",
    "NGPTMLP",
    "WeightNorm",
    "SpectralNorm",
    "WeightStandardization",
    "parametrize",
    "check_layer",
    "check_gradients",
    "gradcheck",
    "registry",
    "nn",
]
