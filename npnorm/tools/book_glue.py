"""``glue`` for the book's chapters: :func:`myst_nb.glue` for values computed with NumPy.

NumPy 2 writes its scalars as ``np.float64(0.5)``; myst-nb formats a glued number from that text
(``{glue:text}`name:.2f```), cannot parse it and fails the build. The chapters glue through this
function, which hands myst-nb the equivalent Python number (``.item()``), so no chapter has to
remember ``float(...)`` at each call.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def glue(name: str, value: Any, display: bool = True) -> None:
    """:func:`myst_nb.glue` with NumPy scalars (``np.float64``, ``np.int64``, ``np.bool_``...)
    converted to Python numbers; any other value is passed on unchanged."""
    from myst_nb import glue as myst_glue    # only the book's environment needs myst-nb
    myst_glue(name, value.item() if isinstance(value, np.generic) else value, display=display)
