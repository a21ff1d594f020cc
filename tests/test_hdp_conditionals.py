"""The HDP conditionals of `(betas, pi)` given `z` (model.md §1) against exact moments.

With a fixed `z`, `mask` and `betas`, one call of `resample_hdp_transitions` draws
`mbar` (table counts), then `betas' ~ Dirichlet(gamma / K + colsum(mbar))`, then
`pi[i] ~ Dirichlet(n[i] + alpha * betas' + kappa * e_i)`. For tiny counts the law of
`colsum(mbar)` is computed exactly (each cell is a sum of independent Bernoullis,
cells are independent), so `E[betas']`, `Var(betas')` and `E[pi]` (linear in
`betas'`) are exact; draws are compared with z-scores from Monte Carlo standard errors.
"""

import itertools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from arhmm_eqx._transitions import resample_hdp_transitions, sample_betas, sample_pi


Z_MAX = 5.0
K, L = 3, 1
ALPHA, KAPPA, GAMMA = 2.0, 5.0, 3.0
BETAS = np.array([0.5, 0.3, 0.2])


def _problem():
    """A fixed `z` with sticky runs, and a mask whose holes drop some transitions."""
    z = np.array(
        [
            [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 0],
            [2, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0],
        ]
    )
    mask = np.ones((2, z.shape[1] + L))
    mask[0, 5] = 0.0  # an interior gap: the transition into z[0, 4] (0 -> 1) still counts
    mask[1, -3:] = 0.0  # trailing padding: drops the last three transitions of sequence 1
    return z, mask


def _counts_numpy(z, mask):
    """`n[i, j]`: transitions `z[t-1] -> z[t]` whose target frame `t + L` of `x`, or a later
    frame of the sequence, is valid (model.md, "Masking")."""
    n = np.zeros((K, K))
    for s, t in itertools.product(range(z.shape[0]), range(1, z.shape[1])):
        n[z[s, t - 1], z[s, t]] += float(np.any(mask[s, t + L :] > 0))
    return n


def _bernoulli_pmf(n, a, s):
    pmf = np.array([1.0])
    for k in range(int(n)):
        p = a / (a + s + k)
        pmf = np.concatenate([pmf * (1 - p), [0.0]]) + np.concatenate([[0.0], pmf * p])
    return pmf


def _colsum_pmfs(counts, betas, alpha, kappa, sticky=True):
    """pmf of `sum_i mbar[i, j]` for every column `j` (convolution of independent cells)."""
    out = []
    for j in range(K):
        pmf = np.array([1.0])
        for i in range(K):
            s = kappa if (i == j and sticky) else 0.0
            pmf = np.convolve(pmf, _bernoulli_pmf(counts[i, j], alpha * betas[j], s))
        out.append(pmf)
    return out


def _exact_betas_moments(counts, betas, alpha, kappa, gamma, sticky=True):
    """Exact `E[betas']` and `Var(betas')`, enumerating the (independent) column sums of `mbar`."""
    pmfs = _colsum_pmfs(counts, betas, alpha, kappa, sticky)
    m1, m2 = np.zeros(K), np.zeros(K)
    for cs in itertools.product(*(range(p.size) for p in pmfs)):
        w = np.prod([p[c] for p, c in zip(pmfs, cs)])
        c = gamma / K + np.array(cs, float)
        c0 = c.sum()
        m1 += w * c / c0
        m2 += w * c * (c + 1) / (c0 * (c0 + 1))
    return m1, m2 - m1**2


def _brute_force_mbar(rng, counts, betas, alpha, kappa, size):
    """Independent simulator: one uniform per customer, `Bernoulli(a / (a + s + k))`."""
    nmax = int(counts.max())
    k = np.arange(nmax)
    a = alpha * betas[None, :, None]
    s = kappa * np.eye(K)[:, :, None]
    p = np.where(k < counts[:, :, None], a / (a + s + k), 0.0)
    return (rng.uniform(size=(size, K, K, nmax)) < p).sum(-1)


def _z_mean(samples, expected, extra_se=0.0):
    samples = np.asarray(samples, np.float64)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    return (samples.mean(axis=0) - expected) / np.sqrt(se**2 + extra_se**2)


def _z_var(samples, expected_var):
    x = np.asarray(samples, np.float64)
    n = x.shape[0]
    c = x - x.mean(axis=0)
    var = (c**2).sum(axis=0) / (n - 1)
    return (var - expected_var) / np.sqrt(((c**4).mean(axis=0) - var**2) / n)


def _dirichlet_moments(conc):
    c0 = conc.sum(-1, keepdims=True)
    return conc / c0, conc * (c0 - conc) / (c0**2 * (c0 + 1))


def _f32(v):
    return jnp.asarray(v, jnp.float32)


def test_exact_reference_agrees_with_brute_force_simulation():
    # The enumeration used as the reference agrees with a direct Bernoulli-sum simulation.
    counts = _counts_numpy(*_problem())
    mean, var = _exact_betas_moments(counts, BETAS, ALPHA, KAPPA, GAMMA)
    mbar = _brute_force_mbar(np.random.default_rng(0), counts, BETAS, ALPHA, KAPPA, 200_000)
    c = GAMMA / K + mbar.sum(axis=1)
    dir_mean = c / c.sum(-1, keepdims=True)
    assert np.abs(_z_mean(dir_mean, mean)).max() < Z_MAX
    # Second moments: E[betas'^2] = E[c (c + 1) / (c0 (c0 + 1))] over mbar.
    c0 = c.sum(-1, keepdims=True)
    assert np.abs(_z_mean(c * (c + 1) / (c0 * (c0 + 1)), var + mean**2)).max() < Z_MAX


def test_sample_pi_rows_dirichlet_moments():
    counts = _counts_numpy(*_problem())
    n = 20_000
    draw = jax.jit(jax.vmap(sample_pi, in_axes=(0, None, None, None, None)))
    pi = np.asarray(draw(jr.split(jr.key(31), n), _f32(counts), _f32(BETAS), _f32(ALPHA), _f32(KAPPA)))
    assert pi.shape == (n, K, K) and pi.dtype == np.float32
    np.testing.assert_allclose(pi.astype(np.float64).sum(-1), 1.0, atol=1e-5)
    mean, var = _dirichlet_moments(counts + ALPHA * BETAS[None, :] + KAPPA * np.eye(K))
    assert np.abs(_z_mean(pi, mean)).max() < Z_MAX
    assert np.abs(_z_var(pi, var)).max() < Z_MAX


def test_sample_betas_dirichlet_moments():
    mbar = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0]])
    n = 20_000
    draw = jax.jit(jax.vmap(sample_betas, in_axes=(0, None, None)))
    b = np.asarray(draw(jr.split(jr.key(32), n), _f32(mbar), _f32(GAMMA)))
    mean, var = _dirichlet_moments(GAMMA / K + mbar.sum(0))
    assert np.abs(_z_mean(b, mean)).max() < Z_MAX
    assert np.abs(_z_var(b, var)).max() < Z_MAX


def _resample_draws(seed, n):
    z, mask = _problem()

    def one(key):
        return resample_hdp_transitions(
            key,
            jnp.asarray(z),
            _f32(mask),
            _f32(BETAS),
            alpha=_f32(ALPHA),
            kappa=_f32(KAPPA),
            gamma=_f32(GAMMA),
            num_states=K,
            nlags=L,
        )

    betas, pi = jax.jit(jax.vmap(one))(jr.split(jr.key(seed), n))
    return np.asarray(betas), np.asarray(pi)


@pytest.fixture(scope="module")
def resample_draws():
    """20000 draws of `(betas', pi)` from `resample_hdp_transitions` with the fixed `z`, `mask`, `betas`."""
    return _resample_draws(33, 20_000)


def test_resample_hdp_transitions_moments(resample_draws):
    betas, pi = resample_draws
    n = betas.shape[0]
    counts = _counts_numpy(*_problem())
    assert betas.shape == (n, K) and pi.shape == (n, K, K)
    np.testing.assert_allclose(betas.astype(np.float64).sum(-1), 1.0, atol=1e-5)
    mean_b, var_b = _exact_betas_moments(counts, BETAS, ALPHA, KAPPA, GAMMA)
    zb, zv = _z_mean(betas, mean_b), _z_var(betas, var_b)
    assert np.abs(zb).max() < Z_MAX, zb
    assert np.abs(zv).max() < Z_MAX, zv
    # Also against the mean of (gamma / K + colsum(mbar)) / sum over mbar from the brute-force simulator.
    mbar = _brute_force_mbar(np.random.default_rng(1), counts, BETAS, ALPHA, KAPPA, 100_000)
    c = GAMMA / K + mbar.sum(axis=1)
    sim = c / c.sum(-1, keepdims=True)
    se_sim = sim.std(0, ddof=1) / np.sqrt(sim.shape[0])
    zs = _z_mean(betas, sim.mean(0), extra_se=se_sim)
    assert np.abs(zs).max() < Z_MAX, zs
    # pi is drawn given the new betas; its mean is linear in betas', so
    # E[pi[i, j]] = (n[i, j] + alpha E[betas'_j] + kappa [i == j]) / (n[i].sum() + alpha + kappa).
    mean_pi = (counts + ALPHA * mean_b[None, :] + KAPPA * np.eye(K)) / (counts.sum(1, keepdims=True) + ALPHA + KAPPA)
    zp = _z_mean(pi, mean_pi)
    assert np.abs(zp).max() < Z_MAX, zp
    # The same draws reject the reference of a sampler that forgets the stickiness in the table
    # counts (the test has power against that mistake).
    wrong_mean, _ = _exact_betas_moments(counts, BETAS, ALPHA, KAPPA, GAMMA, sticky=False)
    assert np.abs(_z_mean(betas, wrong_mean)).max() > Z_MAX


def test_resample_hdp_transitions_masked_transitions_do_not_count(resample_draws):
    # Reference built from counts that (wrongly) include the trailing padding's transitions is rejected.
    z, mask = _problem()
    wrong_counts = _counts_numpy(z, np.ones_like(mask))
    assert not np.array_equal(wrong_counts, _counts_numpy(z, mask))
    _, pi = resample_draws
    mean_b, _ = _exact_betas_moments(wrong_counts, BETAS, ALPHA, KAPPA, GAMMA)
    wrong_pi = (wrong_counts + ALPHA * mean_b[None, :] + KAPPA * np.eye(K)) / (
        wrong_counts.sum(1, keepdims=True) + ALPHA + KAPPA
    )
    assert np.abs(_z_mean(pi, wrong_pi)).max() > Z_MAX


def test_sample_pi_tiny_concentrations_stay_valid():
    # Zero counts, betas underflowing to tiny values and a huge kappa: rows stay finite, positive, normalised.
    K2 = 6
    betas = jnp.asarray([1.0 - 5e-30] + [1e-30] * (K2 - 1), jnp.float32)
    pi = jax.jit(sample_pi)(jr.key(35), jnp.zeros((K2, K2), jnp.float32), betas, _f32(1e-2), _f32(1e8))
    p = np.asarray(pi, np.float64)
    assert np.all(np.isfinite(p)) and np.all(p > 0)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
