"""The experiments, one module per topic; each experiment a function returning plain data, and a
command::

    python -m npnorm.experiments --list
    python -m npnorm.experiments NAME [--quick | --full] [--seed S] [--json FILE]

Topics:

* :mod:`.why_normalization` - chapter "Why normalization helps": normalizers compared in a CNN, the
  batch-size sweep, initialization scale, dead units, depth statistics, BatchNorm's train/eval gap.
* :mod:`.transformers` - chapter "Normalization in transformers": gradient norms at initialization,
  post- vs pre-LN with warm-up, QK-norm at a high learning rate, the normalizers in pre-LN, nGPT,
  gradient clipping.

The framework (registration, progress bars, JSON) is :mod:`._framework`. The book calls the same
functions with ``quick=True``. The models they train are in :mod:`npnorm.models`.
"""

from ._framework import EXPERIMENTS, Experiment, experiment, progress, show_progress, to_jsonable
from . import why_normalization, transformers
from .why_normalization import (batch_size_sweep, bn_train_eval_gap, compare_normalizers, dead_units,
                                depth_statistics, init_scale_sweep, shapes_data)

__all__ = ["EXPERIMENTS", "Experiment", "experiment", "progress", "show_progress", "to_jsonable", "run",
           "compare_normalizers", "batch_size_sweep", "init_scale_sweep", "dead_units", "depth_statistics",
           "bn_train_eval_gap", "shapes_data"]


def run(name: str, quick: bool = True, seed: int = 0, **options):
    """Run the registered experiment ``name`` and return its data."""
    try:
        exp = EXPERIMENTS[name]
    except KeyError:
        raise KeyError(f"no experiment named {name!r}; `python -m npnorm.experiments --list` lists "
                       f"them: {', '.join(EXPERIMENTS)}") from None
    return exp(quick=quick, seed=seed, **options)
