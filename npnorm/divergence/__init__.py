"""Normalizers derived from the affine divergence (to be filled).

What belongs here: the layers that follow from removing the per-sample factor ``||x||^2 + 1`` by
which a gradient step on an affine layer departs from steepest descent on its outputs (Bird,
"The Affine Divergence", 2025) - the affine-like layer and PatchNorm for convolutions. The L2 and
RMS pre-normalizers that the same argument gives are shared with :mod:`npnorm.transformer` and
:mod:`npnorm.statistics`.
"""

__all__: list[str] = []
