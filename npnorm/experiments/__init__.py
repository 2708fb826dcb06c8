"""The experiments, one module per topic; each experiment a function returning plain data, and a
command::

    python -m npnorm.experiments --list
    python -m npnorm.experiments NAME [--quick | --full] [--seed S] [--jobs N] [--json FILE]

Topics:

* :mod:`.why_normalization` - chapter "Why normalization helps": normalizers compared in a CNN, the
  batch-size sweep, initialization scale, dead units, depth statistics, BatchNorm's train/eval gap;
  and the learning-rate sweep with and without BatchNorm of chapter "Batch normalization".
* :mod:`.layer_and_weight` - LayerNorm against BatchNorm across batch sizes (chapter "Layer
  normalization and RMSNorm"); weight normalization in training (chapter "Weight normalization and
  spectral normalization").
* :mod:`.diffusion` - chapter "Adaptive normalization": a DDPM on labelled 2-D points conditioned
  through AdaGN / adaLN(-Zero), and its ablations.
* :mod:`.transformers` - chapter "Normalization in transformers": gradient norms at initialization,
  post- vs pre-LN with warm-up, QK-norm at a high learning rate, the normalizers in pre-LN, nGPT,
  gradient clipping.
* :mod:`.divergence` - chapter "The affine divergence and PatchNorm": MLP and CNN ablations, the
  batch-size prediction, scale (in)variance.
* :mod:`.gan` - chapter "Keeping a critic Lipschitz": a 2-D GAN with weight clipping, gradient penalty,
  spectral normalization or nothing; the critic alone against a fixed generator.
* :mod:`.catalog` - chapter "The rest of the catalog": the small-batch sweep over BN, batch renorm,
  ghost BN, GN, FRN and EvoNorm.

The framework (registration, progress bars, JSON) is :mod:`._framework`. The book calls the same
functions with ``quick=True``. The models they train are in :mod:`npnorm.models`.
"""

from ._framework import EXPERIMENTS, Experiment, experiment, progress, show_progress, to_jsonable
from . import why_normalization, transformers
from . import layer_and_weight  # noqa: I001 (registration order = --list order)
from .layer_and_weight import ln_vs_bn_batch_size, weight_norm_training
from . import diffusion
from .diffusion import diffusion_2d, diffusion_ablations, diffusion_guidance, diffusion_shapes
from . import gan
from .gan import critic_fixed_generator, gan_lipschitz
from .why_normalization import (batch_size_sweep, bn_train_eval_gap, compare_normalizers, dead_units,
                                depth_statistics, init_scale_sweep, learning_rate_sweep,
                                shapes_data)
from . import divergence
from .divergence import batch_size_prediction, cnn_ablation, mlp_ablation, scale_response
from . import catalog
from .catalog import small_batch_catalog

__all__ = ["EXPERIMENTS", "Experiment", "experiment", "progress", "show_progress", "to_jsonable", "run",
           "compare_normalizers", "batch_size_sweep", "init_scale_sweep", "dead_units", "depth_statistics",
           "bn_train_eval_gap", "learning_rate_sweep", "shapes_data", "ln_vs_bn_batch_size",
           "weight_norm_training", "mlp_ablation", "cnn_ablation", "batch_size_prediction", "scale_response",
           "small_batch_catalog", "diffusion_2d", "diffusion_ablations", "diffusion_guidance", "diffusion_shapes", "gan_lipschitz", "critic_fixed_generator"]


def run(name: str, quick: bool = True, seed: int = 0, **options):
    """Run the registered experiment ``name`` and return its data."""
    try:
        exp = EXPERIMENTS[name]
    except KeyError:
        raise KeyError(f"no experiment named {name!r}; `python -m npnorm.experiments --list` lists "
                       f"them: {', '.join(EXPERIMENTS)}") from None
    return exp(quick=quick, seed=seed, **options)
