"""npnorm.nn beyond the registry's per-layer gradient checks: a whole CNN end to end, the Numba and
NumPy im2col agreeing, conventions (init, dropout, losses, optimizers), and error messages."""

import copy
import math

import numpy as np
import pytest

from npnorm import nn
from npnorm.base import Module
from npnorm.gradcheck import check_gradients, check_layer
from npnorm.nn import init
from npnorm.nn.conv import col2im, col2im_numba, im2col, im2col_numba
from npnorm.nn.layers import erf
from npnorm.nn.losses import cross_entropy_backward, cross_entropy_forward, mse_backward, mse_forward
from npnorm.registry import randomize_layer


# -- a whole network, gradient-checked end to end ------------------------------------------------
class _WithLoss(Module):
    """model + loss as one layer with a 1-element output, so check_layer checks the loss too."""

    def __init__(self, model, loss, target):
        self.model, self.loss, self.target = model, loss, target
        super().__init__()

    params = property(lambda self: self.model.params, lambda self, v: None)
    grads = property(lambda self: self.model.grads, lambda self, v: None)

    def children(self):
        return [self.model]

    def forward(self, x):
        return np.array([self.loss(self.model(x), self.target)])

    def backward(self, dout):
        return self.model.backward(self.loss.backward(scale=float(dout[0])))


def _small_cnn_with_bn(rng):
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, stride=1, padding=1, bias=False, rng=rng), nn.BatchNorm2d(5), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(5 * 2 * 2, 6, rng=rng), nn.GELU(), nn.Linear(6, 3, rng=rng),
    )


CNN_PARAMS = {"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "5.weight", "5.bias",
              "9.weight", "9.bias", "11.weight", "11.bias"}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_whole_cnn_with_batchnorm_and_cross_entropy_gradient_check(mode):
    rng = np.random.default_rng(0)
    model = _small_cnn_with_bn(rng)
    randomize_layer(model, rng)
    x = 1.0 + 2.0 * rng.standard_normal((4, 2, 8, 8))
    y = rng.integers(0, 3, 4)
    net = _WithLoss(model, nn.CrossEntropyLoss(), y)
    net.train(mode == "train")
    # ReLU and max-pool are not differentiable at kinks and ties: a tiny step keeps the central
    # differences on one side of them (fourth-order stencil, so the truncation error stays negligible).
    report = check_layer(net, x, h=1e-5, raise_on_failure=False)
    assert {c.name for c in report.comparisons} == {"x"} | CNN_PARAMS
    assert report.passed, str(report)


def test_larger_cnn_sampled_gradient_check():
    """A wider network, every parameter tensor checked on a random sample of its elements."""
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1, rng=rng), nn.GroupNorm(2, 8), nn.SiLU(),
                          nn.Flatten(), nn.Linear(8 * 2 * 2, 10, rng=rng))
    randomize_layer(model, rng)
    x = rng.standard_normal((6, 1, 8, 8))
    net = _WithLoss(model, nn.CrossEntropyLoss(), rng.integers(0, 10, 6))
    report = check_layer(net, x, h=1e-5, samples=25, raise_on_failure=False)
    assert len(report.comparisons) == 1 + len(model.params)
    assert report.passed, str(report)


def test_sequential_params_are_views_of_the_layers():
    model = _small_cnn_with_bn(np.random.default_rng(0))
    assert set(model.params) == CNN_PARAMS
    assert dict(model.named_parameters()) .keys() == model.params.keys()
    model.params["0.weight"][...] = 0.5          # in place through the view
    assert np.all(model[0].params["weight"] == 0.5)
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    model.backward(np.ones_like(model(x)))
    assert set(model.grads) == CNN_PARAMS
    model.zero_grad()
    assert model.grads == {}


# -- error messages ---------------------------------------------------------------------------------
def test_sequential_names_the_layer_and_the_incoming_shape():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(100, 10))
    with pytest.raises(ValueError) as err:
        model(np.zeros((2, 1, 8, 8)))
    msg = str(err.value)
    assert "layer 3 (Linear)" in msg and "(2, 256)" in msg and "in_features=100" in msg


def test_conv_and_linear_errors():
    with pytest.raises(ValueError, match=r"in_channels=3.*\(2, 1, 8, 8\)"):
        nn.Conv2d(3, 4, 3)(np.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        nn.Conv2d(1, 1, 5)(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        nn.MaxPool2d(2)(np.zeros((2, 8)))
    with pytest.raises(TypeError, match="floating-point"):
        nn.Linear(3, 2)(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(1, 1, 0)
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Linear(2, 2).backward(np.zeros((1, 2)))


# -- convolution internals --------------------------------------------------------------------------
@pytest.mark.parametrize("k, s, p", [((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (0, 1)), ((2, 2), (2, 2), (1, 0))])
def test_numba_im2col_col2im_agree_with_numpy_and_are_adjoint(k, s, p):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    cols = im2col(x, k, s, p)
    np.testing.assert_array_equal(im2col_numba(x, k, s, p), cols)
    c = rng.standard_normal(cols.shape)
    back = col2im(c, x.shape, k, s, p)
    np.testing.assert_allclose(col2im_numba(c, x.shape, k, s, p), back, rtol=1e-13, atol=1e-13)
    # col2im is the adjoint (transpose) of im2col: <im2col(x), c> = <x, col2im(c)>
    assert math.isclose(np.sum(cols * c), np.sum(x * back), rel_tol=1e-12)


def test_conv2d_matches_the_definition_and_backends_agree():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5))
    layers = {b: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), rng=1, backend=b) for b in ("numpy", "numba")}
    w, bias = layers["numpy"].params["weight"], layers["numpy"].params["bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    ref = np.zeros((2, 4, 3, 4))
    for n in range(2):
        for o in range(4):
            for a in range(3):
                for b in range(4):
                    ref[n, o, a, b] = bias[o] + np.sum(w[o] * xp[n, :, 2 * a:2 * a + 3, b:b + 2])
    outs = {b: layer(x) for b, layer in layers.items()}
    np.testing.assert_allclose(outs["numpy"], ref, atol=1e-12)
    np.testing.assert_allclose(outs["numba"], ref, atol=1e-12)
    dy = rng.standard_normal(ref.shape)
    dx_np, dx_nb = layers["numpy"].backward(dy), layers["numba"].backward(dy)
    np.testing.assert_allclose(dx_nb, dx_np, atol=1e-12)
    np.testing.assert_allclose(layers["numba"].grads["weight"], layers["numpy"].grads["weight"], atol=1e-12)


def test_pytorch_default_init_bounds_and_shapes():
    init.manual_seed(0)
    lin = nn.Linear(50, 20)
    conv = nn.Conv2d(3, 8, (3, 5))
    assert lin.params["weight"].shape == (20, 50) and conv.params["weight"].shape == (8, 3, 3, 5)
    for w, b, fan_in in ((lin.params["weight"], lin.params["bias"], 50), (conv.params["weight"], conv.params["bias"], 45)):
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
        assert np.abs(b).max() <= bound
    # manual_seed makes models reproducible
    init.manual_seed(3)
    a = nn.Linear(4, 4).params["weight"].copy()
    init.manual_seed(3)
    np.testing.assert_array_equal(nn.Linear(4, 4).params["weight"], a)


def test_initializers_follow_pytorch_gains_and_fans():
    assert init.fan_in_and_fan_out((64, 32, 3, 3)) == (288, 576)
    assert init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    rng = np.random.default_rng(0)
    w = np.empty((400, 300))
    init.kaiming_normal_(w, nonlinearity="relu", rng=rng)
    assert w.std() == pytest.approx(math.sqrt(2 / 300), rel=0.01)
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", rng=rng)
    assert w.std() == pytest.approx(math.sqrt(2 / 400), rel=0.01)
    init.kaiming_uniform_(w, nonlinearity="relu", rng=rng)
    assert np.abs(w).max() <= math.sqrt(6 / 300) and w.std() == pytest.approx(math.sqrt(2 / 300), rel=0.01)
    init.xavier_uniform_(w, gain=2.0, rng=rng)
    assert np.abs(w).max() <= 2 * math.sqrt(6 / 700) and w.std() == pytest.approx(2 * math.sqrt(2 / 700), rel=0.01)
    init.xavier_normal_(w, rng=rng)
    assert w.std() == pytest.approx(math.sqrt(2 / 700), rel=0.01)
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(w, mode="fan_avg")


# -- activations and dropout ------------------------------------------------------------------------
def test_erf_and_exact_gelu_values():
    xs = np.linspace(-6, 6, 101)
    assert np.max(np.abs(erf(xs) - np.array([math.erf(v) for v in xs]))) == 0.0
    g = nn.GELU()(np.array([-1.0, 0.0, 1.0, 3.0]))
    # x * Phi(x) with Phi(1) = 0.8413447460685429, Phi(3) = 0.9986501019683699
    np.testing.assert_allclose(g, [-(1 - 0.8413447460685429), 0.0, 0.8413447460685429, 3 * 0.9986501019683699],
                               rtol=1e-15, atol=1e-16)


def test_silu_is_finite_for_huge_inputs():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = nn.SiLU()(np.array([-1000.0, 1000.0]))
    np.testing.assert_array_equal(y, [-0.0, 1000.0])


def test_dropout_is_reproducible_unbiased_and_identity_in_eval():
    x = np.ones((200, 100))
    d = nn.Dropout(0.3, rng=0)
    twin = copy.deepcopy(d)
    y1 = d(x)
    np.testing.assert_array_equal(twin(x), y1)       # a deep copy draws the same mask (gradcheck relies on it)
    assert not np.array_equal(d(x), y1)              # the next call draws a new one
    zeros = np.mean(y1 == 0)
    assert abs(zeros - 0.3) < 0.01
    assert set(np.unique(y1)) == {0.0, 1 / 0.7}
    assert abs(y1.mean() - 1.0) < 0.02
    dx = d.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx == 0, d(x) * 0 + (dx == 0))  # shape sanity
    d.eval()
    assert d(x) is x or np.array_equal(d(x), x)
    assert np.all(nn.Dropout(1.0, rng=0)(x) == 0)
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(1.5)


def test_dropout_gradient_check_uses_one_mask():
    """The check deep-copies the layer before every evaluation; the mask must be the same each time,
    and not all ones or all zeros, so the check is meaningful in train mode."""
    layer = nn.Dropout(0.5, rng=42)
    x = np.random.default_rng(0).standard_normal((5, 8))
    masks = {tuple((copy.deepcopy(layer)(x) != 0).ravel()) for _ in range(5)}
    assert len(masks) == 1
    mask = np.array(next(iter(masks)))
    assert 0 < mask.sum() < mask.size
    check_layer(layer, x)


# -- losses --------------------------------------------------------------------------------------------
def test_cross_entropy_value_gradient_and_stability():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4)) * 3
    t = rng.integers(0, 4, 5)
    crit = nn.CrossEntropyLoss()
    loss = crit(z, t)
    ref = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(5), t])
    assert loss == pytest.approx(ref, rel=1e-14)
    for reduction in ("mean", "sum"):
        def fwd(z, reduction=reduction):
            loss, cache = cross_entropy_forward(z, t, reduction)
            return np.array([loss]), cache
        check_gradients(fwd, lambda d, c: cross_entropy_backward(c, float(d[0])), {"z": z})
    big = crit(np.array([[1000.0, -1000.0], [0.0, 1000.0]]), np.array([0, 0]))
    assert big == pytest.approx(500.0)
    with pytest.raises(ValueError, match="0..3"):
        crit(z, np.array([0, 1, 2, 3, 4]))
    with pytest.raises(TypeError, match="integer"):
        crit(z, t.astype(float))
    with pytest.raises(RuntimeError, match="before"):
        nn.CrossEntropyLoss().backward()


def test_mse_value_and_gradient():
    rng = np.random.default_rng(1)
    p, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert nn.MSELoss()(p, t) == pytest.approx(np.mean((p - t) ** 2))

    def fwd(p):
        loss, cache = mse_forward(p, t)
        return np.array([loss]), cache
    check_gradients(fwd, lambda d, c: mse_backward(c, float(d[0])), {"p": p})
    with pytest.raises(ValueError, match="differ"):
        nn.MSELoss()(p, t[:2])


# -- optimizers ----------------------------------------------------------------------------------------
def _one_param_layer(value):
    layer = nn.Linear(2, 1, bias=False, rng=0)
    layer.params["weight"][...] = value
    return layer


def test_sgd_momentum_weight_decay_by_hand():
    layer = _one_param_layer([[1.0, -2.0]])
    opt = nn.SGD(layer, lr=0.1, momentum=0.9, weight_decay=0.01)
    w = np.array([[1.0, -2.0]])
    buf = None
    for g in ([[0.5, 0.5]], [[-1.0, 2.0]], [[0.3, 0.0]]):
        g = np.array(g)
        layer.grads["weight"] = g.copy()
        opt.step()
        d = g + 0.01 * w
        buf = d if buf is None else 0.9 * buf + d
        w = w - 0.1 * buf
        np.testing.assert_allclose(layer.params["weight"], w, rtol=1e-15)


def test_adam_by_hand_and_first_step_size():
    layer = _one_param_layer([[1.0, -2.0]])
    opt = nn.Adam(layer, lr=0.01, weight_decay=0.1)
    w, m, v = np.array([[1.0, -2.0]]), 0.0, 0.0
    for t, g in enumerate(([[0.5, -3.0]], [[-1.0, 2.0]], [[0.3, 0.0]]), start=1):
        g = np.array(g)
        layer.grads["weight"] = g.copy()
        opt.step()
        d = g + 0.1 * w
        m = 0.9 * m + 0.1 * d
        v = 0.999 * v + 0.001 * d * d
        w = w - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(layer.params["weight"], w, rtol=1e-14)
    # Adam's first step is lr * sign(g), whatever the gradient's size
    layer = _one_param_layer([[0.0, 0.0]])
    opt = nn.Adam(layer, lr=0.01)
    layer.grads["weight"] = np.array([[1e-3, -1e3]])
    opt.step()
    np.testing.assert_allclose(layer.params["weight"], [[-0.01, 0.01]], rtol=1e-4)


def test_optimizers_train_a_small_model():
    from npnorm.data import make_gaussian_mixture
    X, y = make_gaussian_mixture(300, n_classes=3, seed=0)
    for make_opt in (lambda m: nn.SGD(m, lr=0.1, momentum=0.9), lambda m: nn.Adam(m, lr=0.01),
                     lambda m: nn.AdamW(m, lr=0.01)):
        model = nn.Sequential(nn.Linear(2, 16, rng=0), nn.Tanh(), nn.Linear(16, 3, rng=1))
        opt, crit = make_opt(model), nn.CrossEntropyLoss()
        first = crit(model(X), y)
        for _ in range(100):
            crit(model(X), y)
            opt.zero_grad()
            model.backward(crit.backward())
            opt.step()
        assert crit(model(X), y) < 0.5 * first


def test_optimizer_finds_parameters_of_nested_and_custom_modules():
    class Block(Module):
        """A custom layer with its own parameter and a child layer."""

        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2, rng=0)
            self.params["scale"] = np.ones(2)

        def children(self):
            return [self.inner]

    block = Block()
    model = nn.Sequential(block, nn.Sequential(nn.Linear(2, 3, rng=1)))
    opt = nn.SGD(model, lr=0.1)
    assert sorted(k for _, k in opt.targets) == ["bias", "bias", "scale", "weight", "weight"]
    assert len({id(m) for m, _ in opt.targets}) == 3
