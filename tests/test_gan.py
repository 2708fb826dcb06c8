"""The GAN of chapter 12 (npnorm.models.gan, npnorm.experiments.gan, npnorm.data.gan2d): the done-when
properties (a spectrally normalized critic never beats the product of its layers' spectral norms; a
gradient-penalty critic has gradient norm near 1 at interpolates after training), the wiring of the
penalty's gradients into the critic, clipping, the metrics and the data. Short runs (seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from npnorm.data import GAN_DATASETS, make_gan_data, make_grid, make_ring, mixture_centres
from npnorm.experiments.gan import (critic_fixed_generator, lipschitz_probe, mode_stats, sliced_wasserstein,
                                    train_gan)
from npnorm.gradcheck import numerical_gradient
from npnorm.models.gan import GAN, MLPCritic


def test_sn_critic_gradient_never_exceeds_the_product_of_layer_norms():
    gan = GAN("wasserstein", "sn", hidden=16, depth=3, seed=3)
    data = make_ring(4000, seed=1)
    rng = np.random.default_rng(0)
    worst = 0.0
    for it in range(40):
        for _ in range(2):
            gan.critic_step(data[rng.integers(0, 4000, 64)])
        gan.generator_step(64)
        real, fake = data[rng.integers(0, 4000, 128)], gan.sample(128)
        wild = rng.normal(0.0, 3.0, (128, 2))
        probe = lipschitz_probe(gan.critic, real, fake, rng)
        lip = max(probe["lip"], np.linalg.norm(gan.critic.input_gradient(wild), axis=1).max())
        bound = float(np.prod(gan.critic.layer_norms()))          # ReLU: activation constant 1
        assert bound == pytest.approx(probe["bound"], rel=1e-12)
        assert lip <= bound * (1 + 1e-12), (it, lip, bound)
        worst = max(worst, lip / bound)
    assert 0.0 < worst <= 1.0
    est, exact = gan.critic.sigma_estimates()
    assert np.all(est <= exact * (1 + 1e-12))                   # u^T W v never exceeds sigma_1
    assert np.all(gan.critic.layer_norms() >= 1 - 1e-12)         # so W / sigma_hat has norm >= 1


def test_gp_critic_gradient_norm_is_near_one_at_interpolates_after_training():
    r = critic_fixed_generator(quick=True, methods=(("gp", {"lam": 10.0}), ("none", {})))
    gp = r["results"]["gp-10"]
    assert abs(gp["interp_mean"] - 1.0) < 0.1, gp["interp_mean"]
    assert np.median(gp["grad_norm_interp"]) == pytest.approx(1.0, abs=0.1)
    assert abs(r["results"]["none"]["interp_mean"] - 1.0) > 10       # without the penalty: nowhere near 1


def test_gp_gan_gradient_norm_at_interpolates_near_one():
    h = train_gan("ring", "wasserstein", "gp", iterations=150, hidden=32, lam=10.0, log_every=150, seed=0)
    assert abs(h["interp_mean"][-1] - 1.0) < 0.2, h["interp_mean"]
    assert abs(h["interp_mean"][0] - 1.0) > 0.5                      # it was not near 1 at the start


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_penalty_gradients_reach_the_critic_layers(activation):
    """MLPCritic.gradient_penalty adds d(mean penalty)/d(param) to each Linear layer's grads."""
    critic = MLPCritic(2, 5, 2, activation, seed=1)
    x = np.random.default_rng(2).normal(size=(6, 2))
    critic.zero_grad()
    critic.gradient_penalty(x, 3.0)
    for name, p in critic.params.items():
        num = numerical_gradient(lambda: np.array(critic.gradient_penalty(x, 3.0)[0]), p, np.array(1.0), h=1e-5)
        critic.zero_grad()
        critic.gradient_penalty(x, 3.0)
        np.testing.assert_allclose(critic.grads[name], num, rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("spectral", [False, True])
def test_critic_value_is_the_eval_mode_forward(spectral):
    critic = MLPCritic(2, 8, 2, "leaky_relu", spectral_norm=spectral, seed=4)
    x = np.random.default_rng(5).normal(size=(7, 2))
    critic(x)                      # a training-mode pass (moves u, v under spectral norm)
    np.testing.assert_allclose(critic.value(x), critic.eval()(x)[:, 0], rtol=1e-12, atol=1e-12)


def test_weight_clipping_keeps_every_parameter_in_range_and_piles_at_c():
    h = train_gan("ring", "wasserstein", "clip", iterations=60, clip=0.01, log_every=60, seed=1)
    assert h["final"]["at_clip"] > 0.5
    gan = GAN("wasserstein", "clip", hidden=16, clip=0.05, seed=2)
    gan.critic_step(make_ring(64, seed=3))
    assert all(np.abs(v).max() <= 0.05 for v in gan.critic.params.values())


def test_sliced_wasserstein_and_mode_stats():
    a = make_ring(1000, seed=0)
    assert sliced_wasserstein(a, a) == 0.0
    shift = np.array([0.3, 0.0])
    # a pure shift t: each projection moves by theta . t
    theta = np.random.default_rng(0).standard_normal((2, 64))
    theta /= np.linalg.norm(theta, axis=0)
    assert sliced_wasserstein(a + shift, a) == pytest.approx(np.mean(np.abs(shift @ theta)), rel=1e-12)
    s = mode_stats(make_grid(5000, seed=1), mixture_centres("grid"))
    assert s["modes"] == 25 and s["hq"] == pytest.approx(1 - np.exp(-4.5), abs=0.005)   # P(chi2_2 < 9)
    collapsed = np.tile(mixture_centres("ring")[:1], (100, 1))
    assert mode_stats(collapsed, mixture_centres("ring")) == {"modes": 1, "hq": 1.0}
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein(a, a[:10])


def test_gan_data_sets():
    for name in GAN_DATASETS:
        X = make_gan_data(name, 300, seed=7)
        assert X.shape == (300, 2) and X.dtype == np.float64
        np.testing.assert_array_equal(X, make_gan_data(name, 300, seed=7))
        assert np.abs(X).max() < 3.0
    assert mixture_centres("ring").shape == (8, 2) and mixture_centres("grid").shape == (25, 2)
    np.testing.assert_allclose(np.linalg.norm(mixture_centres("ring"), axis=1), 2.0)
    with pytest.raises(ValueError, match="name"):
        make_gan_data("moons")
    with pytest.raises(ValueError, match="n_samples"):
        make_ring(0)


def test_bad_gan_arguments():
    with pytest.raises(ValueError, match="method"):
        GAN(method="dropout")
    with pytest.raises(ValueError, match="loss"):
        GAN(loss="hinge")
    with pytest.raises(ValueError, match="Wasserstein"):
        GAN(loss="nonsaturating", method="gp")


def test_eval_of_a_container_reaches_spectral_norm_inside_a_wrapper():
    """Sequential.eval() sets `training` on every module it reaches; the spectral-norm wrapper passes it
    on to its normalizer, so no power step runs in eval mode."""
    critic = MLPCritic(2, 6, 1, spectral_norm=True, seed=0)
    sn = critic.linear_layers()[0].parametrization
    critic.eval()
    assert not sn.training
    u = sn.u.copy()
    critic(np.ones((3, 2)))
    np.testing.assert_array_equal(sn.u, u)
    critic.train()
    assert sn.training
