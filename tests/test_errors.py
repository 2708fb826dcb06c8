"""Bad input gets a clear error that names the argument and what was expected."""

import numpy as np
import pytest

import npnorm

X4 = np.zeros((2, 3, 4, 4))


@pytest.mark.parametrize(
    "make, x, exc, pattern",
    [
        # wrong rank
        (lambda: npnorm.BatchNorm2d(3), np.zeros((2, 3, 4)), ValueError, r"\(N, C, H, W\).*3-D"),
        (lambda: npnorm.BatchNorm1d(3), np.zeros((2, 3, 4, 4)), ValueError, r"\(N, C\) or \(N, C, L\)"),
        (lambda: npnorm.BatchNorm1d(3), np.zeros(3), ValueError, r"1-D"),
        (lambda: npnorm.InstanceNorm2d(3), np.zeros((3, 4)), ValueError, r"\(N, C, H, W\) or \(C, H, W\)"),
        (lambda: npnorm.InstanceNorm1d(3), X4, ValueError, r"\(N, C, L\) or \(C, L\)"),
        (lambda: npnorm.GroupNorm(1, 3), np.zeros(3), ValueError, r"\(N, C, \*\)"),
        # trailing dims vs normalized_shape
        (lambda: npnorm.LayerNorm(5), np.zeros((2, 4)), ValueError, r"normalized_shape=\(5,\).*\(2, 4\)"),
        (lambda: npnorm.LayerNorm((3, 4)), np.zeros((2, 4, 3)), ValueError, r"trailing dimensions"),
        (lambda: npnorm.RMSNorm(5), np.zeros((5, 2)), ValueError, r"normalized_shape=\(5,\)"),
        # channel count
        (lambda: npnorm.BatchNorm2d(4), X4, ValueError, r"3 channels.*num_features=4"),
        (lambda: npnorm.BatchNorm1d(4), np.zeros((2, 3)), ValueError, r"num_features=4"),
        (lambda: npnorm.GroupNorm(2, 4), X4, ValueError, r"num_channels=4"),
        (lambda: npnorm.InstanceNorm2d(4), X4, ValueError, r"num_features=4"),
        # dtypes
        (lambda: npnorm.LayerNorm(4), np.zeros((2, 4), dtype=np.int64), TypeError, r"x must be a floating-point.*int64"),
        (lambda: npnorm.BatchNorm2d(3), X4.astype(bool), TypeError, r"floating-point.*bool"),
        (lambda: npnorm.GroupNorm(1, 3), X4.astype(np.complex128), TypeError, r"floating-point.*complex128"),
        (lambda: npnorm.RMSNorm(4), np.zeros((2, 4), dtype=np.int32), TypeError, r"float32"),
        (lambda: npnorm.InstanceNorm2d(3), X4.astype(np.uint8), TypeError, r"uint8"),
        # batch statistics need more than one value per channel
        (lambda: npnorm.BatchNorm1d(3), np.zeros((1, 3)), ValueError, r"more than 1 value per channel"),
        (lambda: npnorm.BatchNorm2d(3), np.zeros((1, 3, 1, 1)), ValueError, r"more than 1 value per channel"),
        (lambda: npnorm.BatchNorm1d(3, track_running_stats=False).eval(), np.zeros((1, 3)), ValueError,
         r"more than 1 value"),
        (lambda: npnorm.InstanceNorm2d(3), np.zeros((2, 3, 1, 1)), ValueError, r"more than 1 spatial element"),
    ],
)
def test_forward_rejects_bad_input(make, x, exc, pattern):
    layer = make()
    with pytest.raises(exc, match=pattern) as info:
        layer(x)
    assert type(layer).__name__ in str(info.value)  # the message names the layer


@pytest.mark.parametrize(
    "make, exc, pattern",
    [
        (lambda: npnorm.GroupNorm(3, 4), ValueError, r"num_groups=3 must divide num_channels=4"),
        (lambda: npnorm.GroupNorm(0, 4), ValueError, r"num_groups must be >= 1"),
        (lambda: npnorm.GroupNorm(2.0, 4), TypeError, r"num_groups must be a positive integer"),
        (lambda: npnorm.BatchNorm2d(3, eps=0), ValueError, r"eps must be > 0"),
        (lambda: npnorm.BatchNorm1d(3, eps=-1e-5), ValueError, r"eps must be > 0"),
        (lambda: npnorm.LayerNorm(3, eps=0.0), ValueError, r"eps must be > 0"),
        (lambda: npnorm.RMSNorm(3, eps=-1.0), ValueError, r"eps must be > 0"),
        (lambda: npnorm.GroupNorm(1, 3, eps=float("nan")), ValueError, r"eps must be > 0"),
        (lambda: npnorm.InstanceNorm1d(3, eps=0), ValueError, r"eps must be > 0"),
        (lambda: npnorm.AdaIN(eps=0), ValueError, r"eps must be > 0"),
        (lambda: npnorm.LayerNorm(3, eps="1e-5"), TypeError, r"eps must be a positive float"),
        (lambda: npnorm.BatchNorm2d(0), ValueError, r"num_features must be >= 1"),
        (lambda: npnorm.BatchNorm2d(3, momentum=1.5), ValueError, r"momentum must be in \[0, 1\]"),
        (lambda: npnorm.LayerNorm((3, 0)), ValueError, r"normalized_shape must contain positive ints"),
        (lambda: npnorm.LayerNorm("abc"), ValueError, r"normalized_shape"),
        (lambda: npnorm.LayerNorm(()), ValueError, r"at least one dimension"),
    ],
)
def test_constructor_rejects_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


@pytest.mark.parametrize(
    "layer",
    [npnorm.BatchNorm1d(3), npnorm.BatchNorm2d(3), npnorm.LayerNorm(3), npnorm.RMSNorm(3), npnorm.GroupNorm(1, 3),
     npnorm.InstanceNorm1d(3), npnorm.InstanceNorm2d(3), npnorm.AdaIN()],
    ids=lambda layer: type(layer).__name__,
)
def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        layer.backward(np.ones((2, 3)))


@pytest.mark.parametrize(
    "content, style, pattern",
    [
        (np.zeros((2, 3, 4, 4)), np.zeros((2, 4, 4, 4)), r"content has 3 channels but style has 4"),
        (np.zeros((2, 3, 4, 4)), np.zeros((3, 3, 4, 4)), r"style batch size must be 1 or equal"),
        (np.zeros((2, 3)), np.zeros((2, 3)), r"content of shape \(N, C, \*spatial\)"),
        (np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 16)), r"same number of dimensions"),
        (np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 1, 1)), r"style needs more than 1 spatial element"),
    ],
)
def test_adain_rejects_mismatched_inputs(content, style, pattern):
    with pytest.raises(ValueError, match=pattern):
        npnorm.AdaIN()(content, style)


def test_adain_rejects_integer_style():
    with pytest.raises(TypeError, match=r"style must be a floating-point"):
        npnorm.AdaIN()(np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3), dtype=int))
