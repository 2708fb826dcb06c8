"""Data sets generated on the spot from a seed - nothing is downloaded.

* :func:`make_moons`, :func:`make_spirals`, :func:`make_gaussian_mixture`: 2-D toy sets.
* :func:`make_shapes`: ten classes of shapes and textures as small grey-scale images, with random
  photometry (contrast, polarity, offset, background ramp, noise).
* :func:`make_ring`, :func:`make_grid`, :func:`make_swiss_roll_2d` (:func:`make_gan_data` by name,
  :func:`mixture_centres`): the 2-D distributions of the GAN chapter.
* :func:`make_shapes_2d`: labelled 2-D points on four outlines (the diffusion experiments' data).
* :func:`train_test_split`.
* :func:`load_sample_image`, :func:`available_images`: the sample images that ship with matplotlib,
  re-exported from :mod:`npnorm.data.sample_images` when that module is present.
"""

from importlib.util import find_spec

from .shapes import SHAPE_CLASSES, make_shapes, train_test_split
from .toy import make_gaussian_mixture, make_moons, make_spirals
from .gan2d import GAN_DATASETS, make_gan_data, make_grid, make_ring, make_swiss_roll_2d, mixture_centres
from .shapes2d import SHAPE_2D_CLASSES, make_shapes_2d

__all__ = ["make_moons", "make_spirals", "make_gaussian_mixture", "make_shapes", "SHAPE_CLASSES",
           "train_test_split", "GAN_DATASETS", "make_ring", "make_grid", "make_swiss_roll_2d", "make_gan_data",
           "mixture_centres", "make_shapes_2d", "SHAPE_2D_CLASSES"]

# The matplotlib sample-image loader is written with the book (npnorm/data/sample_images.py); re-export it
# here so that all data lives under npnorm.data. Checked by module spec, not by catching ImportError,
# so an error inside the loader is never hidden.
if find_spec("npnorm.data.sample_images") is not None:
    from .sample_images import available_images, load_sample_image  # noqa: F401

    __all__ += ["available_images", "load_sample_image"]
