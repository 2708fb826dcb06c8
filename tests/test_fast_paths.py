"""The fast paths of the network layers give the reference's numbers: the compiled max pooling (its
2x2 special case and the general loop, ties and NaN included), the transposed-layout convolution, and
the float32 path (every parameter float32: computed in float32, as PyTorch does)."""

import numpy as np
import pytest

from npnorm import nn
from npnorm.models import small_cnn
from npnorm.nn import conv as C


@pytest.mark.parametrize("kernel,stride,padding,shape", [
    ((2, 2), (2, 2), (0, 0), (3, 4, 8, 6)),       # the written-out 2x2 kernel
    ((2, 2), (2, 2), (0, 0), (2, 3, 7, 5)),       # odd sizes: the last row/column is dropped
    ((3, 3), (2, 2), (1, 1), (2, 3, 7, 6)),       # the general loop, with padding
    ((2, 3), (1, 2), (1, 0), (1, 2, 5, 7)),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_max_pool_matches_the_reference_with_ties_and_nan(kernel, stride, padding, shape, dtype):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal(shape), 0.0).astype(dtype)    # after a ReLU: many tied zeros
    x[0, 0, 1, 1] = np.nan
    x[-1, -1, 0, :3] = 2.0                                             # a tie at the maximum
    ref, ref_cache = C.max_pool2d_forward(x, kernel, stride, padding)
    fast, fast_cache = C.max_pool2d_forward_numba(x, kernel, stride, padding)
    np.testing.assert_array_equal(fast, ref)                           # NaN where the reference has NaN
    g = rng.standard_normal(ref.shape).astype(dtype)
    # overlapping windows add their gradients in another order: equal up to the last bit
    np.testing.assert_allclose(C.max_pool2d_backward_numba(g, fast_cache), C.max_pool2d_backward(g, ref_cache),
                               rtol=1e-14 if dtype == np.float64 else 1e-6, atol=0)


def test_max_pool_layer_backends_agree():
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_normal((4, 3, 8, 8)), 0.0)
    g = rng.standard_normal((4, 3, 4, 4))
    a, b = nn.MaxPool2d(2, backend="numpy"), nn.MaxPool2d(2, backend="numba")
    np.testing.assert_array_equal(a(x), b(x))
    np.testing.assert_array_equal(a.backward(g), b.backward(g))
    with pytest.raises(ValueError, match="backend"):
        nn.MaxPool2d(2, backend="cuda")


@pytest.mark.parametrize("stride,padding", [((1, 1), (1, 1)), ((2, 1), (0, 2))])
def test_transposed_layout_convolution_matches_the_reference(stride, padding):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((3, 2, 7, 6)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    ref, rc = C.conv2d_forward(x, w, b, stride, padding, "numpy")
    out, oc = C.conv2d_forward(x, w, b, stride, padding, "numba")
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(ref.shape)
    for got, want in zip(C.conv2d_backward(g, oc), C.conv2d_backward(g, rc)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_float32_path_computes_in_float32_and_stays_close_to_float64():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((8, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    m32, m64 = small_cnn("bn", dtype=np.float32, seed=0), small_cnn("bn", seed=0)
    for (k, p32), (_, p64) in zip(m32.named_parameters(), m64.named_parameters()):
        assert p32.dtype == np.float32 and p64.dtype == np.float64, k
        p32[...] = p64                                             # the same weights
    crit = nn.CrossEntropyLoss()
    out32, out64 = m32(X), m64(X)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)
    crit(out32, y); m32.backward(crit.backward())
    crit(out64, y); m64.backward(crit.backward())
    g32 = [m.grads[k] for m in m32.modules() for k in m.grads]
    g64 = [m.grads[k] for m in m64.modules() for k in m.grads]
    assert len(g32) == len(g64) > 0
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4 * max(1.0, float(np.abs(b).max())))


def test_linear_computes_in_float32_only_when_everything_is_float32():
    x32 = np.ones((2, 3), np.float32)
    assert C.compute_dtype(x32, np.ones(3, np.float32)) == np.float32
    assert C.compute_dtype(x32, np.ones(3)) == np.float64
    lin = nn.Linear(3, 2, dtype=np.float32)
    y = lin(x32)
    assert y.dtype == np.float32 and lin._cache["x"].dtype == np.float32
