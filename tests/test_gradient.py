"""Gradients of the marginal log-likelihood (wrt x and params) and optax fitting against EM."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import random_model
from test_em import _check_recovery, _true_params

import arhmm_eqx as ae
from arhmm_eqx._generate import simulate_dataset


K, D, L = 3, 2, 2
# Sequence 1: frames 3, 4 are masked but are the lags of frame 5 (valid); frames 6, 7 are a masked tail.
MASK = np.array([[1, 1, 1, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0]], dtype=np.float64)
N, T = MASK.shape


def _tiny():
    k_model, k_x = jr.split(jr.key(0))
    Ab, Q, pi, betas = random_model(k_model, K, D, L, jnp.float64)
    x = 1.5 * jr.normal(k_x, (N, T, D), dtype=jnp.float64)
    hp = ae.Hyperparams.from_scales(K, D, L, alpha=2.0, kappa=2.0, S_0_scale=0.5, K_0_scale=1.0)
    model = ae.ARHMM(hp, ae.Params(Ab=Ab, Q=Q, pi=pi, betas=betas), ae.States(z=jnp.zeros((N, T - L), jnp.int32)))
    return model, x, jnp.asarray(MASK)


def test_grad_wrt_x_matches_finite_differences():
    with jax.enable_x64(True):
        model, x, mask = _tiny()
        f = jax.jit(lambda x: model.marginal_log_likelihood(x, mask))
        grad = np.asarray(jax.grad(lambda x: model.marginal_log_likelihood(x, mask))(x))
        h = 1e-5
        fd = np.zeros(x.shape)
        for idx in np.ndindex(*x.shape):
            e = jnp.zeros(x.shape).at[idx].set(h)
            fd[idx] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)
        # masked frames count only as lags of valid frames: the masked tail has no gradient
        assert np.all(grad[1, 6:] == 0) and np.all(np.abs(grad[1, 3:5]) > 1e-6)


def test_grad_wrt_params_matches_finite_differences():
    """Directional derivatives of `log_posterior` along random directions of the unconstrained parameters."""
    with jax.enable_x64(True):
        model, x, mask = _tiny()
        u0 = ae.UnconstrainedParams.from_params(model.params)
        back = u0.to_params(model.params.betas)
        for name in ("Ab", "Q", "pi"):
            np.testing.assert_allclose(getattr(back, name), getattr(model.params, name), rtol=1e-12, atol=1e-14)

        def f(u):
            return ae.ARHMM(model.hyperparams, u.to_params(model.params.betas), model.states).log_posterior(x, mask)

        grad = eqx.filter_grad(f)(u0)
        f_jit = eqx.filter_jit(f)
        h = 1e-5
        for i in range(4):
            leaves = jax.tree.leaves(u0)
            keys = jr.split(jr.key(i), len(leaves))
            direction = jax.tree.unflatten(jax.tree.structure(u0),
                                           [jr.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
            plus = jax.tree.map(lambda a, d: a + h * d, u0, direction)
            minus = jax.tree.map(lambda a, d: a - h * d, u0, direction)
            fd = (float(f_jit(plus)) - float(f_jit(minus))) / (2 * h)
            exact = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
            np.testing.assert_allclose(exact, fd, rtol=1e-6)


def _data(dtype, num_sequences=3, num_frames=200):
    (p_true,) = _true_params(dtype)
    z, x = simulate_dataset(jr.key(0), p_true.pi, p_true.Ab, p_true.Q, num_sequences, num_frames)
    return p_true, z, x, jnp.ones(x.shape[:2], dtype)


def test_gradient_fit_reaches_em_optimum():
    """Both maximise `log_posterior` from the same start (the truth, so one basin). EM runs to a
    per-frame improvement of 1e-12; Adam with a cosine-decayed step (1e-2 down to 1e-4) must match
    its log posterior to 1e-6 nats per frame: at a strict maximum the gap is quadratic in the
    parameter error, and a decayed step leaves a parameter error far below 1e-3 (it reaches
    about 1e-13 per frame here). The gradient at EM's fixed point vanishes (same objective)."""
    with jax.enable_x64(True):
        p_true, _, x, mask = _data(jnp.float64)
        frames = float(jnp.sum(mask[:, L:]))
        hp = ae.Hyperparams.from_scales(3, D, L, kappa=100.0, S_0_scale=0.02)
        start = ae.ARHMM(hp, p_true, ae.States(z=jnp.zeros((3, 198), jnp.int32)))
        em, info = ae.fit_em(start, x, mask, max_iters=500, tol=1e-12)
        assert bool(info.converged)
        lp_em = float(em.log_posterior(x, mask))
        schedule = optax.cosine_decay_schedule(1e-2, 1500, alpha=1e-2)
        adam, losses = ae.fit_gradient(start, x, mask, optax.adam(schedule), num_steps=1500)
        lp_adam = float(adam.log_posterior(x, mask))
        assert abs(lp_adam - lp_em) / frames < 1e-6, (lp_adam, lp_em)
        np.testing.assert_allclose(float(losses[-1]), -lp_adam / frames, atol=1e-5)

        def neg(u):
            return -ae.ARHMM(hp, u.to_params(em.params.betas), em.states).log_posterior(x, mask) / frames

        g_em = eqx.filter_grad(neg)(ae.UnconstrainedParams.from_params(em.params))
        g_start = eqx.filter_grad(neg)(ae.UnconstrainedParams.from_params(start.params))
        norm = lambda g: float(jnp.sqrt(sum(jnp.sum(a**2) for a in jax.tree.leaves(g))))
        assert norm(g_em) < 1e-5 * max(1.0, norm(g_start)), (norm(g_em), norm(g_start))


@pytest.mark.slow
def test_gradient_fit_recovers_simulated_parameters():
    """Best of 4 Adam fits (one vmap) from prior draws; checks as in the EM recovery test."""
    (p_true,) = _true_params(jnp.float32)
    z_true, x = simulate_dataset(jr.key(0), p_true.pi, p_true.Ab, p_true.Q, 4, 500)
    mask = jnp.ones(x.shape[:2])
    hp = ae.Hyperparams.from_scales(3, D, L, kappa=300.0, S_0_scale=0.02)
    starts = eqx.filter_vmap(lambda k: ae.ARHMM.from_prior(hp, x, mask, key=k))(jr.split(jr.key(4), 4))
    opt = optax.adam(optax.cosine_decay_schedule(3e-2, 600, alpha=1e-2))
    fits, losses = eqx.filter_vmap(lambda m: ae.fit_gradient(m, x, mask, opt, num_steps=600))(starts)
    best = int(np.argmin(np.asarray(losses[:, -1])))
    _check_recovery(jax.tree.map(lambda a: a[best], fits), np.asarray(z_true), x, hp, p_true)


def test_minibatches_and_bad_arguments():
    p_true, _, x, mask = _data(jnp.float32, num_sequences=4, num_frames=100)
    hp = ae.Hyperparams.from_scales(3, D, L, kappa=100.0, S_0_scale=0.02)
    model = ae.ARHMM(hp, p_true, ae.States(z=jnp.zeros((4, 98), jnp.int32)))
    noisy = eqx.tree_at(lambda m: m.params.Ab, model, model.params.Ab + 0.1)
    fitted, losses = ae.fit_gradient(noisy, x, mask, optax.adam(1e-2), num_steps=100, batch_size=2, key=jr.key(0))
    assert losses.shape == (100,) and np.all(np.isfinite(np.asarray(losses)))
    assert float(fitted.log_posterior(x, mask)) > float(noisy.log_posterior(x, mask))
    assert np.mean(np.asarray(losses[-20:])) < np.mean(np.asarray(losses[:20]))
    # a line-search optimiser gets the value and value_fn it needs
    lbfgs, _ = ae.fit_gradient(noisy, x, mask, optax.lbfgs(), num_steps=10)
    assert float(lbfgs.log_posterior(x, mask)) > float(noisy.log_posterior(x, mask))
    with pytest.raises(ValueError, match="`key` is required"):
        ae.fit_gradient(model, x, mask, optax.adam(1e-2), num_steps=2, batch_size=2)
    with pytest.raises(ValueError, match="`batch_size`"):
        ae.fit_gradient(model, x, mask, optax.adam(1e-2), num_steps=2, batch_size=5, key=jr.key(0))
    with pytest.raises(ValueError, match="`num_steps`"):
        ae.fit_gradient(model, x, mask, optax.adam(1e-2), num_steps=0)
    with pytest.raises(TypeError, match="optimizer"):
        ae.fit_gradient(model, x, mask, "adam", num_steps=2)
