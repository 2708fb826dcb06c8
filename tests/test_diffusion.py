"""The 2-D DDPM: schedule, sampler, the denoiser's end-to-end backward (through every adaptive layer
and the shared embedding), a short training run that must condition on class and timestep, and
the measures. Kept to a few seconds; the full figures are the experiments' (chapter 9)."""

import numpy as np
import pytest

from npnorm.data import make_shapes_2d
from npnorm.experiments.diffusion import in_class_fraction, sliced_wasserstein, train_denoiser
from npnorm.gradcheck import numerical_gradient
from npnorm.models.ddpm import Schedule, linear_betas, sample
from npnorm.models.denoiser import Denoiser2D


def test_schedule_scaled_with_steps_reaches_noise():
    scaled, unscaled = Schedule(linear_betas(50)), Schedule(linear_betas(50, scale_with_steps=False))
    assert scaled.alpha_bar[-1] < 1e-5                 # x_T is (almost) pure noise
    assert unscaled.alpha_bar[-1] > 0.5                # the T=1000 range at T=50: far from noise
    np.testing.assert_allclose(Schedule(linear_betas(1000)).betas[[0, -1]], [1e-4, 0.02])


def test_q_sample_has_the_forward_marginal():
    s = Schedule(linear_betas(50))
    rng = np.random.default_rng(0)
    x0 = np.full((200000, 2), 2.0)
    t = np.full(200000, 10)
    xt = s.q_sample(x0, t, rng.standard_normal(x0.shape))
    np.testing.assert_allclose(xt.mean(0), 2.0 * np.sqrt(s.alpha_bar[10]), atol=0.01)
    np.testing.assert_allclose(xt.var(0), 1.0 - s.alpha_bar[10], rtol=0.02)


@pytest.mark.parametrize("config", [
    {"norm": "adagn"}, {"norm": "adaln"}, {"norm": "adaln-zero", "zero_init": False},
    {"t_mode": "concat"}, {"inject": "first"}, {"class_cond": False},
])
def test_denoiser_backward_reaches_every_parameter(config):
    """The whole network's hand-written backward - through the adaptive norms, the shared embedding
    (summed over blocks), the timestep MLP and the class table - against central differences on a
    few entries of every parameter and of the input."""
    model = Denoiser2D(num_classes=3, width=8, emb_dim=6, depth=2, groups=2, freq_dim=4, seed=1, **config)
    rng = np.random.default_rng(0)
    for m in model.modules():                    # no zero-initialised layer: every path carries gradient
        for v in m.params.values():
            v += rng.normal(0, 0.3, v.shape)
    x, t, y = rng.standard_normal((5, 2)), rng.integers(0, 50, 5), rng.integers(0, 4, 5)
    dout = rng.standard_normal((5, 2))
    model(x, t, y)
    dx = model.backward(dout)
    leaves = [(m, k) for m in model.modules() for k in m.params]
    assert len(leaves) >= 10
    for arr, analytic in [(x, dx)] + [(m.params[k], m.grads[k]) for m, k in leaves]:
        idx = [tuple(int(i) for i in np.unravel_index(j, arr.shape))
               for j in rng.choice(arr.size, min(3, arr.size), replace=False)]
        num = numerical_gradient(lambda: model(x, t, y), arr, dout, indices=idx)
        for i in idx:
            assert abs(num[i] - analytic[i]) <= 1e-7 * max(1e-4, abs(num[i]) + abs(analytic[i])), (i, num[i],
                                                                                                    analytic[i])


def test_short_training_conditions_on_class_and_timestep():
    """300 steps (a few seconds): samples land in the asked class, and the network told t fits the
    noise better than the one that is not."""
    X, y = make_shapes_2d(2000, seed=0)
    Xr, yr = make_shapes_2d(1000, seed=1)
    losses = {}
    for t_mode in ("adaptive", "none"):
        model, sched, curve, _ = train_denoiser({"t_mode": t_mode, "width": 32, "emb_dim": 32}, X, y, 300, 128,
                                                3e-3, seed=0)
        losses[t_mode] = curve[-2:].mean()
        if t_mode == "adaptive":
            asked = np.arange(200) % 4
            pts, _ = sample(model, sched, 200, asked, np.random.default_rng(0), clip=3.0)
            assert in_class_fraction(pts, asked, Xr, yr) > 0.85
    assert losses["adaptive"] < 0.8 * losses["none"], losses


def test_sliced_wasserstein():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 2))
    assert sliced_wasserstein(a, a) == 0.0
    # a shift by d along every direction u moves each projection by d . u: RMS over directions |d|/sqrt(2)
    np.testing.assert_allclose(sliced_wasserstein(a, a + [3.0, 0.0], n_proj=4000), 3.0 / np.sqrt(2), rtol=0.03)
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein(a, a[:10])


def test_in_class_fraction_counts_nan_as_miss():
    X = np.array([[0.0, 0.0], [5.0, 5.0]])
    y = np.array([0, 1])
    pts = np.array([[0.1, 0.0], [4.9, 5.0], [np.nan, 0.0], [0.0, 0.2]])
    assert in_class_fraction(pts, np.array([0, 1, 0, 1]), X, y) == 0.5


def test_conv_denoiser_backward():
    """The image capstone's denoiser: AdaGN at two resolutions, skip connection, shared embedding."""
    from npnorm.models.conv_denoiser import ConvDenoiser

    model = ConvDenoiser(num_classes=3, channels=4, emb_dim=4, groups=2, freq_dim=4, seed=0)
    rng = np.random.default_rng(1)
    for m in model.modules():
        for v in m.params.values():
            v += rng.normal(0, 0.2, v.shape)
    x, t, y = rng.standard_normal((2, 1, 16, 16)), np.array([3, 60]), np.array([0, 2])
    dout = rng.standard_normal(x.shape)
    model(x, t, y)
    dx = model.backward(dout)
    for arr, analytic in [(x, dx)] + [(m.params[k], m.grads[k]) for m in model.modules() for k in m.params]:
        idx = [tuple(int(i) for i in np.unravel_index(j, arr.shape))
               for j in rng.choice(arr.size, min(2, arr.size), replace=False)]
        num = numerical_gradient(lambda: model(x, t, y), arr, dout, indices=idx)
        for i in idx:
            assert abs(num[i] - analytic[i]) <= 1e-7 * max(1e-4, abs(num[i]) + abs(analytic[i]))


def test_cosine_schedule_reaches_noise_gradually():
    from npnorm.models.ddpm import cosine_betas

    cos, lin = Schedule(cosine_betas(100)), Schedule(linear_betas(100))
    assert np.all(np.diff(cos.alpha_bar) < 0) and cos.alpha_bar[-1] < 1e-4
    assert cos.alpha_bar[25] > lin.alpha_bar[25]       # slower destruction at small t


def test_respace_keeps_alpha_bar_and_maps_timesteps():
    from npnorm.models.ddpm import respace

    s = Schedule(linear_betas(100))
    short, steps = respace(s, 25)
    assert short.num_steps == 25 and steps[0] == 0 and steps[-1] == 99
    np.testing.assert_allclose(short.alpha_bar, s.alpha_bar[steps], rtol=1e-12)
    same, all_steps = respace(s, 100)
    np.testing.assert_allclose(same.betas, s.betas, rtol=1e-10)
    np.testing.assert_array_equal(all_steps, np.arange(100))
    with pytest.raises(ValueError, match="num_steps"):
        respace(s, 0)

    seen = []

    class Recorder:
        num_classes = 2

        def __call__(self, x, t, y):
            seen.append(int(t[0]))
            return np.zeros_like(x)

    sample(Recorder(), short, 3, np.array([0, 1, 0]), timesteps=steps)
    assert seen == list(steps[::-1])                    # the network sees its training timesteps


def test_ema_is_the_exponential_average_after_start():
    from npnorm import nn
    from npnorm.models.ddpm import EMA

    layer = nn.Linear(2, 1, rng=0)
    w0 = layer.params["weight"].copy()
    ema = EMA(layer, decay=0.5, start=1)
    layer.params["weight"][...] = w0 + 1.0
    ema.update()                                        # before start: takes the weights
    layer.params["weight"][...] = w0 + 3.0
    ema.update()                                        # 0.5 (w0 + 1) + 0.5 (w0 + 3)
    layer.params["weight"][...] = 0.0
    ema.copy_to()
    np.testing.assert_allclose(layer.params["weight"], w0 + 2.0)


def test_shape_classifier_is_accurate_on_held_out_real_images():
    """The capstone's in-class measure: its accuracy on real images is the ceiling the book quotes."""
    from npnorm.experiments.diffusion import ShapeClassifier, _clean_shapes

    X, y = _clean_shapes(2000, 0)
    Xh, yh = _clean_shapes(500, 1)
    clf = ShapeClassifier(X, y, seed=0)
    assert clf.accuracy(Xh, yh) > 0.97


def test_diffusion_shapes_returns_what_the_book_plots(monkeypatch):
    """The capstone's pipeline end to end at a toy size (a few seconds): shapes of every result."""
    import npnorm.experiments.diffusion as d

    quick = d.shapes_setting(True)
    monkeypatch.setattr(d, "shapes_setting", lambda q: dict(quick, steps=20, per_class=2, n_train=200))
    r = d.diffusion_shapes(quick=True, seed=0)
    assert r["samples"].shape == (20, 16, 16) and np.all(np.abs(r["samples"]) <= 1.0 + 1e-9)
    np.testing.assert_array_equal(r["asked"], np.repeat(np.arange(10), 2))
    assert r["real"].shape == (10, 16, 16) and len(r["per_class"]) == 10
    assert 0.0 <= r["in_class"] <= 1.0 and r["ceiling"] > 0.97
    assert sorted(r["trajectory"], reverse=True) == [25, 20, 15, 10, 5, 0]
    assert all(v.shape == (10, 16, 16) for v in r["trajectory"].values())
    np.testing.assert_array_equal(r["trajectory"][0], r["samples"][::2])
