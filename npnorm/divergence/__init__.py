"""Layers derived from the affine divergence (Bird, "The Affine Divergence", 2025).

A gradient step on an affine layer moves each sample's output by the ideal steepest-descent step
times the sample-dependent factor ``||x||^2 + 1``. Removing that factor gives:

* :mod:`.prenorm` - the L2 and RMS pre-normalizers (:class:`L2PreNorm`, :class:`RMSPreNorm`) and the
  radial-scaling step (:func:`radial_norm_forward` / :func:`radial_norm_backward`) that normalizes
  an input - computed by the transformer family's L2 normalization
  (:func:`npnorm.transformer.l2norm.l2_normalize_forward`, with eps under the root). The affine-like
  layer and PatchNorm's convolution path divide their *output* by the same divisor instead, computed
  from the squared norm (for PatchNorm a convolution of ``x**2``), so they do not normalize ``x``;
* :mod:`.affine_like` - :class:`AffineLike`, ``(W x + b) / sqrt(||x||^2 + 1)``, not a normalizer;
* :mod:`.patchnorm` - :class:`PatchNormConv2d`, the affine-like layer at every receptive field of a
  convolution;
* :mod:`.measure` - the divergence itself, measured: one SGD step's effect on the activations.

The paper's full text was not readable when this was written: the layers are reconstructions from
its abstract, the author's posts and a third-party summary, labelled as such in every docstring.
"""

from .prenorm import (L2PreNorm, RMSPreNorm, l2_prenorm_forward, prenorm_backward, radial_norm_backward,
                      radial_norm_forward, rms_prenorm_forward)
from .affine_like import AffineLike, affine_like_backward, affine_like_forward
from .patchnorm import PatchNormConv2d, patch_norm_conv2d_backward, patch_norm_conv2d_forward

__all__ = ["L2PreNorm", "RMSPreNorm", "AffineLike", "PatchNormConv2d",
           "radial_norm_forward", "radial_norm_backward", "l2_prenorm_forward", "rms_prenorm_forward",
           "prenorm_backward", "affine_like_forward", "affine_like_backward", "patch_norm_conv2d_forward",
           "patch_norm_conv2d_backward"]
