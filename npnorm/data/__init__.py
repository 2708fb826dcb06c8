"""Data sets generated on the spot from a seed - nothing is downloaded.

* :func:`make_moons`, :func:`make_spirals`, :func:`make_gaussian_mixture`: 2-D toy sets.
* :func:`make_shapes`: ten classes of shapes and textures as small grey-scale images, with random
  photometry (contrast, polarity, offset, background ramp, noise).
* :func:`train_test_split`, :func:`iterate_minibatches`.
"""

from .shapes import SHAPE_CLASSES, make_shapes, train_test_split
from .toy import make_gaussian_mixture, make_moons, make_spirals

__all__ = ["make_moons", "make_spirals", "make_gaussian_mixture", "make_shapes", "SHAPE_CLASSES",
           "train_test_split"]
