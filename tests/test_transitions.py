"""Masked transition counts, and the floor that keeps `pi` positive even for a huge `kappa` (model.md §1)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from arhmm_eqx import _transitions


K, L = 3, 2


def _loop_counts(z, mask, K, L):
    """n[i, j] by a direct loop: z[t-1] -> z[t] counts when frame t + L of x, or a later frame
    of the same sequence, is valid (model.md, "Masking")."""
    counts = np.zeros((K, K))
    for n in range(z.shape[0]):
        for t in range(1, z.shape[1]):
            if np.any(mask[n, t + L :] > 0):
                counts[z[n, t - 1], z[n, t]] += 1
    return counts


def test_count_transitions_with_masks():
    rng = np.random.default_rng(0)
    N, T = 4, 14
    z = rng.integers(0, K, (N, T - L)).astype(np.int32)
    mask = np.ones((N, T), np.float32)
    mask[0, 6] = 0  # one masked frame in the middle
    mask[1, 5:8] = 0  # a masked gap
    mask[2, 10:] = 0  # padding at the end
    mask[3, 0] = 0  # a masked lag-only frame (carries no state)
    mask[3, L] = 0  # the first state frame (never the target of a transition)
    out = jax.jit(_transitions.count_transitions, static_argnames=("num_states", "nlags"))(
        jnp.asarray(z), jnp.asarray(mask), num_states=K, nlags=L
    )
    ref = _loop_counts(z, mask, K, L)
    np.testing.assert_array_equal(np.asarray(out), ref)
    # every state frame t >= 1 up to the last valid one is the target of exactly one counted
    # transition: interior gaps count, only sequence 2's trailing padding (frames 10..13 of x,
    # state frames 8..11) is left out
    assert float(out.sum()) == N * (T - L - 1) - (T - 10)
    # the old rule (only transitions into valid frames) would have dropped the gaps too
    old = sum(mask[n, t + L] > 0 for n in range(N) for t in range(1, T - L))
    assert float(out.sum()) > old
    # the trailing padding really was dropped (same z, full mask counts more)
    full = _transitions.count_transitions(jnp.asarray(z), jnp.ones((N, T), jnp.float32), num_states=K, nlags=L)
    np.testing.assert_array_equal(np.asarray(full), _loop_counts(z, np.ones((N, T)), K, L))
    assert float(full.sum()) == float(out.sum()) + (T - 10)


def test_count_transitions_of_a_known_path():
    z = jnp.asarray([[0, 0, 1, 1, 2, 0]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1, 1, 0, 1, 1]], jnp.float32)  # frame 5 of x = state frame 3 masked
    out = _transitions.count_transitions(z, mask, num_states=K, nlags=L)
    # transitions 0->0, 0->1, 1->1 (into the masked frame of a gap: counts), 1->2, 2->0
    expected = np.zeros((K, K))
    for i, j in [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0)]:
        expected[i, j] += 1
    np.testing.assert_array_equal(np.asarray(out), expected)
    # with the last two frames masked instead (trailing padding), 2->0 and 1->2 drop out
    tail = jnp.asarray([[1, 1, 1, 1, 1, 1, 0, 0]], jnp.float32)
    out = _transitions.count_transitions(z, tail, num_states=K, nlags=L)
    expected = np.zeros((K, K))
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        expected[i, j] += 1
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_transition_weights_leading_interior_and_trailing_gaps():
    """Weights of the transitions into state frames 1.. : 1 up to the last valid frame, 0 after."""
    mask = jnp.asarray(
        [
            [0, 0, 0, 0, 1, 1, 0, 1, 0, 0],  # leading masked stretch, interior gap, trailing padding
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # full
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # nothing valid: no transition counts
        ],
        jnp.float32,
    )
    w = _transitions.transition_weights(mask, nlags=L)
    expected = np.array([[1, 1, 1, 1, 1, 0, 0], [1] * 7, [0] * 7], np.float64)
    np.testing.assert_array_equal(np.asarray(w), expected)


def _row_summing_above_one(dtype):
    """`[0.6, b, 0]` with `b` the smallest value for which `0.6 + b` rounds above 1 in `dtype`
    (a normalised Dirichlet draw is often one ulp off)."""
    a = np.asarray(0.6, dtype)
    b = np.asarray(1.0, dtype) - a
    while a + b <= 1:
        b = np.nextafter(b, np.asarray(2.0, dtype))
    return [a, b, 0.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_floor_and_normalize(dtype):
    """Entries >= `tiny` (so `log` is finite) and rows summing to 1, also for a row that sums to
    1 + 1 ulp with a zero in it, and for an unnormalised row."""
    with jax.enable_x64(dtype == np.float64):
        tiny, eps = float(np.finfo(dtype).tiny), float(np.finfo(dtype).eps)
        pi = jnp.asarray(np.array([_row_summing_above_one(dtype), [0.2, 0.5, 0.3], [0.0, 1e-3, 2.0]], dtype))
        out = np.asarray(jax.jit(_transitions.floor_and_normalize)(pi))
    assert out.dtype == dtype
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=4 * K * eps)
    np.testing.assert_allclose(out[1], [0.2, 0.5, 0.3], rtol=4 * eps)  # a normalised row with no zero stays
    assert np.all(out >= tiny), out
    assert np.all(np.isfinite(np.log(out)))


@eqx.filter_jit
def _init_draws(keys, alpha, kappa, gamma, *, num_states):
    one = lambda k: _transitions.init_hdp_transitions(
        k, alpha=alpha, kappa=kappa, gamma=gamma, num_states=num_states, dtype=jnp.float32)
    return jax.vmap(one)(keys)


@pytest.mark.parametrize(
    "num_states, kappa, gamma",
    [(100, 1e3, 1e3), (100, 1e8, 1e3), (100, 1e10, 1e-3)],
)
def test_init_hdp_transitions_has_no_zero_float32(num_states, kappa, gamma):
    """model.md: a floor of float32 `tiny` keeps every entry of `pi` positive. With kappa = 1e8 the
    off-diagonal mass of a row (~alpha / kappa) is below float32's eps; with K = 100 and the typical
    alpha = 5.7, gamma = 1e3 many Gamma(alpha * betas[j]) draws underflow to 0. In every case `pi`
    has no zero and no NaN, its log is finite and its rows sum to 1."""
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    betas, pi = _init_draws(jr.split(jr.key(0), 20), f32(5.7), f32(kappa), f32(gamma), num_states=num_states)
    assert pi.dtype == jnp.float32 and betas.dtype == jnp.float32
    pi = np.asarray(pi)
    assert not np.any(np.isnan(pi)) and not np.any(np.isnan(np.asarray(betas)))
    np.testing.assert_allclose(pi.sum(-1), 1.0, atol=4 * num_states * float(np.finfo(np.float32).eps))
    if kappa >= 1e8:
        assert np.all(np.diagonal(pi, axis1=-2, axis2=-1) > 0.99)
    assert np.all(pi >= np.finfo(np.float32).tiny), f"{np.sum(pi == 0)} zero entries in {pi.size}"
    assert np.all(np.isfinite(np.log(pi)))


def test_sample_pi_huge_kappa_off_diagonal_mass_float64():
    """In float64, `1 - pi[i, i] ~ Beta(alpha (1 - betas[i]), kappa + alpha betas[i])` with zero
    counts: its mean over draws matches the closed form (z-score < 5 with the Beta's standard error)."""
    kappa, alpha, draws = 1e8, 5.7, 4000
    with jax.enable_x64(True):
        betas = jnp.asarray([0.5, 0.3, 0.2], jnp.float64)
        f64 = lambda v: jnp.asarray(v, jnp.float64)
        sample = jax.jit(jax.vmap(lambda k: _transitions.sample_pi(
            k, jnp.zeros((K, K), jnp.float64), betas, f64(alpha), f64(kappa))))
        pi = np.asarray(sample(jr.split(jr.key(5), draws)))
    off = pi.sum(-1) - np.diagonal(pi, axis1=-2, axis2=-1)  # (draws, K)
    a = alpha * (1 - np.asarray(betas))
    b = kappa + alpha * np.asarray(betas)
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    z = (off.mean(0) - mean) / np.sqrt(var / draws)
    assert np.all(np.abs(z) < 5), z
