"""The parallel-in-time filter / backward sampler (`_inference/parallel.py`) against the sequential pass and paths."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import oracles
from helpers import chi2_pvalue, enumerate_paths, path_codes, random_model

from arhmm_eqx import _inference
from arhmm_eqx._inference import parallel as _parallel


P_MIN = 1e-4  # chi-square threshold: a correct sampler fails with probability 1e-4


def _random_ll(rng, Tz, K, *, scale=1.5, shift=-3.0, masked_frac=0.2):
    """Random emission log-likelihoods with some frames masked (rows exactly 0)."""
    ll = rng.normal(size=(Tz, K)) * scale + shift
    ll[rng.random(Tz) < masked_frac] = 0.0
    return ll


def _random_pi(rng, K):
    return np.stack([rng.dirichlet(2.0 + 3.0 * np.eye(K)[k]) for k in range(K)])


def test_filter_matches_sequential_float64():
    rng = np.random.default_rng(0)
    K = 3
    with jax.enable_x64(True):
        pi = jnp.asarray(_random_pi(rng, K))
        seq, par = jax.jit(oracles.forward_filter), jax.jit(_parallel.parallel_filter)
        for Tz in (1, 2, 7, 64, 301):  # lengths that are and are not powers of two
            ll = jnp.asarray(_random_ll(rng, Tz, K, scale=10.0, shift=-40.0))
            ref_ln, ref_f = seq(ll, pi)
            ln, f = par(ll, pi)
            assert ln.dtype == jnp.float64 and f.shape == (Tz, K)
            np.testing.assert_allclose(float(ln), float(ref_ln), rtol=1e-12, atol=1e-10)
            np.testing.assert_allclose(np.asarray(f), np.asarray(ref_f), rtol=1e-10, atol=1e-14)
        # and against the exact answer by enumeration
        ll = jnp.asarray(_random_ll(rng, 6, K))
        log_z, _, _ = enumerate_paths(ll, pi)
        ln, f = par(ll, pi)
        np.testing.assert_allclose(float(ln), log_z, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(f[-1]), enumerate_paths(ll, pi)[1][-1], rtol=1e-10, atol=1e-14)


def test_filter_long_float32_no_overflow():
    """T = 20000 frames of large log-likelihoods and a floored pi entry: finite, and as accurate as float32 allows."""
    rng = np.random.default_rng(1)
    K, Tz = 4, 20000
    ll = _random_ll(rng, Tz, K, scale=20.0, shift=-50.0, masked_frac=0.1)
    pi = _random_pi(rng, K)
    pi[0, 1] = 1e-30  # floored entry, as init_params may give
    pi[0] /= pi[0].sum()
    with jax.enable_x64(True):
        ref_ln, ref_f = jax.jit(oracles.forward_filter)(jnp.asarray(ll), jnp.asarray(pi))
        ref_ln, ref_f = float(ref_ln), np.asarray(ref_f)
    ln, f = jax.jit(_parallel.parallel_filter)(jnp.asarray(ll, jnp.float32), jnp.asarray(pi, jnp.float32))
    assert ln.dtype == jnp.float32
    assert np.isfinite(float(ln)) and np.all(np.isfinite(np.asarray(f)))
    eps = float(np.finfo(np.float32).eps)
    # Rounding bound of a (tree) sum of Tz float32 terms: eps * ceil(log2 Tz) * sum |terms|.
    tol = eps * math.ceil(math.log2(Tz)) * np.abs(ll.max(-1)).sum()
    assert abs(float(ln) - ref_ln) < tol, (float(ln), ref_ln, tol)
    # The filter forgets its past, so per-frame errors stay of order eps (64 eps of slack).
    np.testing.assert_allclose(np.asarray(f), ref_f, atol=64 * eps)
    np.testing.assert_allclose(np.asarray(f).sum(-1), 1.0, atol=8 * eps)


def test_backward_sample_equals_sequential_given_uniforms():
    """Same filtered messages and uniforms -> exactly the same states as `oracles.backward_sample`."""
    rng = np.random.default_rng(2)
    K, n_draws = 3, 2000
    with jax.enable_x64(True):
        pi = jnp.asarray(_random_pi(rng, K))
        seq = jax.jit(jax.vmap(oracles.backward_sample, in_axes=(None, None, 0)))
        par = jax.jit(jax.vmap(_parallel.parallel_backward_sample, in_axes=(None, None, 0)))
        for Tz in (1, 5, 13):
            ll = jnp.asarray(_random_ll(rng, Tz, K))
            _, filtered = oracles.forward_filter(ll, pi)
            u = jr.uniform(jr.key(Tz), (n_draws, Tz), dtype=jnp.float64)
            z_seq, z_par = seq(filtered, pi, u), par(filtered, pi, u)
            assert z_par.dtype == jnp.int32 and z_par.shape == (n_draws, Tz)
            np.testing.assert_array_equal(np.asarray(z_par), np.asarray(z_seq))
            # from the parallel filter's messages too (they differ from the sequential ones by rounding only)
            _, filtered_par = jax.jit(_parallel.parallel_filter)(ll, pi)
            np.testing.assert_array_equal(np.asarray(par(filtered_par, pi, u)), np.asarray(z_seq))


def test_parallel_ffbs_matches_enumeration():
    """Paths from parallel filter + parallel backward sampler vs all K**Tz paths (chi-square)."""
    rng = np.random.default_rng(3)
    K, Tz, n_draws = 3, 5, 20000
    with jax.enable_x64(True):
        pi = jnp.asarray(_random_pi(rng, K))
        ll = _random_ll(rng, Tz, K)
        ll[2] = 0.0  # a masked frame in the middle
        ll = jnp.asarray(ll)

        @jax.jit
        def draw(keys):
            _, filtered = _parallel.parallel_filter(ll, pi)
            one = lambda k: _parallel.parallel_backward_sample(filtered, pi, jr.uniform(k, (Tz,), dtype=jnp.float64))
            return jax.vmap(one)(keys)

        z = np.asarray(draw(jr.split(jr.key(3), n_draws)))
        log_z, _, probs = enumerate_paths(ll, pi)
        ln, _ = _parallel.parallel_filter(ll, pi)
        np.testing.assert_allclose(float(ln), log_z, rtol=1e-12)
    counts = np.bincount(path_codes(z, K), minlength=K**Tz)
    assert chi2_pvalue(counts, probs) > P_MIN


def _sample_stateseqs_parallel(key, x, mask, Ab, Q, pi):
    return _inference.sample_stateseqs(key, x, mask, Ab, Q, pi, parallel=True)


def _ar_problem(dtype, seed=0):
    """x, mask, Ab, Q, pi: N=3 sequences of T=14 frames, with interior and trailing masked frames."""
    K, D, L, N, T = 3, 2, 2, 3, 14
    k_model, k_x = jr.split(jr.key(seed))
    Ab, Q, pi, _ = random_model(k_model, K, D, L, dtype)
    x = 1.5 * jr.normal(k_x, (N, T, D), dtype=dtype)
    mask = np.ones((N, T))
    mask[0, 6] = 0.0  # interior gap
    mask[1, 9:] = 0.0  # shorter sequence
    mask[2, 4:6] = 0.0
    mask[2, 12:] = 0.0
    return x, jnp.asarray(mask, dtype), Ab, Q, pi


def test_sample_stateseqs_parallel_matches_ffbs():
    """Same key -> same z, log p(x | z) and log p(x) as the blocked pass (float64, masks)."""
    with jax.enable_x64(True):
        x, mask, Ab, Q, pi = _ar_problem(jnp.float64)
        seq = jax.jit(jax.vmap(_inference.sample_stateseqs, in_axes=(0, None, None, None, None, None)))
        par = jax.jit(jax.vmap(_sample_stateseqs_parallel, in_axes=(0, None, None, None, None, None)))
        keys = jr.split(jr.key(5), 200)
        z_s, lj_s, lm_s = seq(keys, x, mask, Ab, Q, pi)
        z_p, lj_p, lm_p = par(keys, x, mask, Ab, Q, pi)
        assert z_p.shape == z_s.shape == (200, 3, 12) and z_p.dtype == jnp.int32
        assert lj_p.dtype == lm_p.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(z_p), np.asarray(z_s))
        np.testing.assert_allclose(np.asarray(lj_p), np.asarray(lj_s), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(lm_p), np.asarray(lm_s), rtol=1e-12)
        mll = jax.jit(oracles.marginal_log_likelihood_parallel)(x, mask, Ab, Q, pi)
        want = _inference.marginal_log_likelihood(x, mask, Ab, Q, pi)
        np.testing.assert_allclose(float(mll), float(want), rtol=1e-12)


def test_jit_and_vmap_agree_with_loop_float32():
    x, mask, Ab, Q, pi = _ar_problem(jnp.float32, seed=1)
    keys = jr.split(jr.key(7), 3)
    one = jax.jit(_sample_stateseqs_parallel)
    z_v, lj_v, lm_v = jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None, None)))(keys, x, mask, Ab, Q, pi)
    assert z_v.shape == (3, 3, 12) and z_v.dtype == jnp.int32 and lj_v.dtype == lm_v.dtype == jnp.float32
    seq = jax.jit(_inference.sample_stateseqs)
    for i in range(3):
        z, lj, lm = one(keys[i], x, mask, Ab, Q, pi)
        np.testing.assert_array_equal(np.asarray(z_v[i]), np.asarray(z))
        np.testing.assert_allclose(float(lj_v[i]), float(lj), rtol=1e-5)
        np.testing.assert_allclose(float(lm_v[i]), float(lm), rtol=1e-5)
        # float32: the same states as the sequential sampler unless rounding moves a cdf boundary
        z_s, _, lm_s = seq(keys[i], x, mask, Ab, Q, pi)
        assert np.mean(np.asarray(z_s) == np.asarray(z)) > 0.95
        np.testing.assert_allclose(float(lm), float(lm_s), rtol=1e-5)
    # the per-sequence filter vmaps over sequences as a loop does
    ll = jax.random.normal(jr.key(8), (4, 9, 3))
    filt = jax.jit(_parallel.parallel_filter)
    ln_v, f_v = jax.jit(jax.vmap(_parallel.parallel_filter, in_axes=(0, None)))(ll, pi)
    for n in range(4):
        ln_n, f_n = filt(ll[n], pi)
        np.testing.assert_allclose(float(ln_v[n]), float(ln_n), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(f_v[n]), np.asarray(f_n), rtol=1e-5, atol=1e-7)
