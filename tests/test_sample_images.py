"""npnorm.data.sample_images: every listed picture loads, in every mode, with the documented shapes."""

import numpy as np
import pytest

from npnorm.data.sample_images import available_images, from_nchw, load_sample_image, to_nchw


@pytest.mark.parametrize("name", list(available_images()))
def test_every_image_loads_in_every_mode(name):
    rgb = load_sample_image(name)
    gray = load_sample_image(name, mode="gray")
    native = load_sample_image(name, mode=None)
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and gray.ndim == 2
    assert rgb.shape[:2] == gray.shape == native.shape[:2]
    for img in (rgb, gray, native):
        assert img.dtype == np.float64 and 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.01


def test_grayscale_is_repeated_and_shrinking_averages_blocks():
    mri = load_sample_image("mri", mode="rgb")
    assert np.array_equal(mri[..., 0], mri[..., 2])
    full = load_sample_image("grace_hopper", mode="gray")
    small = load_sample_image("grace_hopper", mode="gray", max_size=100)
    assert max(small.shape) <= 100
    k = full.shape[0] // small.shape[0]
    assert np.isclose(small[0, 0], full[:k, :k].mean())


def test_nchw_round_trip_and_errors():
    img = load_sample_image("present", max_size=32)
    x = to_nchw(img)
    assert x.shape == (1, 3) + img.shape[:2]
    assert np.array_equal(from_nchw(x), img)
    with pytest.raises(ValueError, match="unknown image 'nope'"):
        load_sample_image("nope")
    with pytest.raises(ValueError, match="mode"):
        load_sample_image("mri", mode="cmyk")
    with pytest.raises(ValueError, match="max_size"):
        load_sample_image("mri", max_size=0)
