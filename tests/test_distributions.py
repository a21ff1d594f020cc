"""Moments of the random draws in `_distributions.py` against closed forms.

Every check is a z-score of a Monte Carlo estimate against its exact value, with the
standard error computed from the same draws; |z| < 5 for every entry.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from arhmm_eqx._distributions import (
    sample_dirichlet,
    sample_gamma,
    sample_inv_wishart,
    sample_inv_wishart_chol,
    sample_log_gamma,
    sample_matrix_normal,
    sample_mniw,
)


Z_MAX = 5.0


def _z_mean(samples, expected):
    """z-scores of the sample mean over axis 0 against `expected`."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    se = samples.std(axis=0, ddof=1) / np.sqrt(n)
    return (samples.mean(axis=0) - expected) / se


def _z_cov(flat, expected_cov):
    """z-scores of every entry of the sample covariance of `flat` `(n, p)` against `expected_cov` `(p, p)`.

    The sample covariance of entries `a, b` is the mean of `(x_a - xbar_a)(x_b - xbar_b)`;
    its standard error is the standard deviation of those products over `sqrt(n)`.
    """
    flat = np.asarray(flat, np.float64)
    n = flat.shape[0]
    c = flat - flat.mean(axis=0)
    prod = c[:, :, None] * c[:, None, :]
    est = prod.mean(axis=0) * n / (n - 1)
    se = prod.std(axis=0, ddof=1) / np.sqrt(n)
    return (est - expected_cov) / se


def _z_var(samples, expected_var):
    """z-scores of the sample variance over axis 0 (SE from the sample fourth central moment)."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    c = samples - samples.mean(axis=0)
    var = (c**2).sum(axis=0) / (n - 1)
    m4 = (c**4).mean(axis=0)
    se = np.sqrt((m4 - var**2) / n)
    return (var - expected_var) / se


def _random_spd(rng, d, jitter=0.5):
    B = rng.normal(size=(d, d))
    return B @ B.T / d + jitter * np.eye(d)


def _inv_wishart_cov(nu, S):
    """`Cov(Q_ij, Q_kl)` of `InvWishart(nu, S)` in `D` dims, as a `(D*D, D*D)` matrix (row-major vec)."""
    D = S.shape[0]
    c = (nu - D) * (nu - D - 1) ** 2 * (nu - D - 3)
    cov = (
        2.0 * np.einsum("ij,kl->ijkl", S, S)
        + (nu - D - 1) * (np.einsum("ik,jl->ijkl", S, S) + np.einsum("il,kj->ijkl", S, S))
    ) / c
    return cov.reshape(D * D, D * D)


def _draw(fn, key, n):
    return jax.jit(jax.vmap(fn))(jr.split(key, n))


# One compiled Dirichlet sampler per dtype and shape, shared by the parametrised tests.
_dirichlet_draws = jax.jit(jax.vmap(sample_dirichlet, in_axes=(0, None)))


def test_inv_wishart_mean_and_covariance():
    # nu - D large enough that the 8th moments exist, so the SE of the covariance is reliable.
    D, nu, n = 3, 23.0, 40_000
    S = _random_spd(np.random.default_rng(0), D)
    with jax.enable_x64(True):
        S_j = jnp.asarray(S, jnp.float64)
        nu_j = jnp.asarray(nu, jnp.float64)
        Q = np.asarray(_draw(lambda k: sample_inv_wishart(k, nu_j, S_j), jr.key(11), n))
    assert Q.dtype == np.float64
    assert np.allclose(Q, np.swapaxes(Q, -1, -2))
    assert np.all(np.linalg.eigvalsh(Q) > 0)
    z = _z_mean(Q, S / (nu - D - 1))
    assert np.abs(z).max() < Z_MAX, z
    zc = _z_cov(Q.reshape(n, D * D), _inv_wishart_cov(nu, S))
    assert np.abs(zc).max() < Z_MAX, zc


def test_matrix_normal_mean_and_covariance():
    D, A, n = 2, 3, 40_000
    rng = np.random.default_rng(2)
    M = rng.normal(size=(D, A))
    U, V = _random_spd(rng, D), _random_spd(rng, A)
    with jax.enable_x64(True):
        args = [jnp.asarray(v, jnp.float64) for v in (M, np.linalg.cholesky(U), np.linalg.cholesky(V))]
        X = np.asarray(_draw(lambda k: sample_matrix_normal(k, *args), jr.key(13), n))
    assert X.shape == (n, D, A)
    z = _z_mean(X, M)
    assert np.abs(z).max() < Z_MAX, z
    # Column-stacking vec: Cov(vec X) = V kron U.
    vec = np.swapaxes(X, -1, -2).reshape(n, D * A)
    zc = _z_cov(vec, np.kron(V, U))
    assert np.abs(zc).max() < Z_MAX, zc


def test_mniw_moments():
    D, A, nu, n = 2, 3, 20.0, 40_000
    rng = np.random.default_rng(3)
    S = _random_spd(rng, D)
    M = rng.normal(size=(D, A))
    K = _random_spd(rng, A)
    with jax.enable_x64(True):
        args = [jnp.asarray(v, jnp.float64) for v in (nu, S, M, K)]
        Ab, Q = _draw(lambda k: sample_mniw(k, *args), jr.key(14), n)
        Ab, Q = np.asarray(Ab), np.asarray(Q)
    EQ = S / (nu - D - 1)
    assert np.abs(_z_mean(Q, EQ)).max() < Z_MAX
    assert np.abs(_z_cov(Q.reshape(n, D * D), _inv_wishart_cov(nu, S))).max() < Z_MAX
    assert np.abs(_z_mean(Ab, M)).max() < Z_MAX
    # Marginal covariance of Ab (row-major vec): Cov(Ab_ij, Ab_kl) = E[Q]_ik K_jl.
    zc = _z_cov(Ab.reshape(n, D * A), np.kron(EQ, K))
    assert np.abs(zc).max() < Z_MAX, zc
    # Conditional structure: Ab | Q ~ MN(M, Q, K), so L_Q^{-1} (Ab - M) L_K^{-T} is i.i.d. N(0, 1)
    # given Q. (A draw of Ab independent of Q with the right marginal would fail this.)
    L_Q = np.linalg.cholesky(Q)
    L_K = np.linalg.cholesky(K)
    W = np.linalg.solve(L_Q, Ab - M)
    W = np.linalg.solve(L_K, np.swapaxes(W, -1, -2))  # (n, A, D) = (L_Q^{-1} (Ab - M) L_K^{-T})^T
    W = W.reshape(n, A * D)
    assert np.abs(_z_mean(W, 0.0)).max() < Z_MAX
    assert np.abs(_z_cov(W, np.eye(A * D))).max() < Z_MAX


def _dirichlet_mean_var(conc):
    conc = np.asarray(conc, np.float64)
    a0 = conc.sum(-1, keepdims=True)
    mean = conc / a0
    var = conc * (a0 - conc) / (a0**2 * (a0 + 1.0))
    return mean, var


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize(
    "conc",
    [
        [[2.0, 0.5, 3.0, 1.0], [0.3, 0.3, 0.3, 5.0]],
        # Tiny concentrations: draws are nearly one-hot; naive gamma draws underflow to 0/0.
        [[1e-3, 2e-3, 5e-4, 3e-3], [1e-3, 1e-3, 1e-3, 1e-3]],
    ],
    ids=["moderate", "tiny"],
)
def test_dirichlet_mean_and_variance(conc, x64):
    n = 20_000
    conc = np.asarray(conc)
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        P = np.asarray(_dirichlet_draws(jr.split(jr.key(15), n), jnp.asarray(conc, dtype)))
    assert P.dtype == np.dtype(dtype)
    assert P.shape == (n,) + conc.shape
    assert np.all(np.isfinite(P))
    assert np.all(P >= 0)
    tol = 1e-12 if x64 else 1e-5
    assert np.allclose(P.astype(np.float64).sum(-1), 1.0, atol=tol, rtol=0)
    mean, var = _dirichlet_mean_var(conc)
    z = _z_mean(P, mean)
    assert np.abs(z).max() < Z_MAX, z
    zv = _z_var(P, var)
    assert np.abs(zv).max() < Z_MAX, zv


def test_dirichlet_tiny_many_states_float32():
    # K = 100 states with concentration 1e-3 (gamma / K at small gamma): finite, sums to one.
    conc = jnp.full((8, 100), 1e-3, jnp.float32)
    P = jax.jit(sample_dirichlet)(jr.key(16), conc)
    assert P.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(P)))
    assert np.allclose(np.asarray(P, np.float64).sum(-1), 1.0, atol=1e-5)


# Shapes from tiny (log-space boost) to very large (the stickiness on the diagonal of the
# transition conditional); the sampler runs as one loop over the whole flattened array.
_GAMMA_SHAPES = [1e-3, 0.05, 0.3, 0.999, 1.0, 1.5, 3.0, 10.0, 100.0, 1e4, 1e6]
_log_gamma_draws = jax.jit(sample_log_gamma)


@pytest.mark.parametrize("x64", [False, True])
def test_log_gamma_ks_against_scipy(x64):
    """Kolmogorov-Smirnov test of every shape's draws against `scipy.stats` (fixed seed).

    The log of a `Gamma(a)` variate is `scipy.stats.loggamma(a)`, whose CDF is exact for the
    tiny shapes where the variate itself underflows. All shapes are drawn in one call, so the
    whole-array rejection loop runs with elements that need different numbers of rounds.
    """
    import scipy.stats

    n = 20_000
    shapes = np.asarray(_GAMMA_SHAPES)
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        conc = jnp.asarray(np.repeat(shapes[:, None], n, axis=1), dtype)
        draws = np.asarray(_log_gamma_draws(jr.key(21), conc), np.float64)
    assert draws.dtype == np.float64 and np.all(np.isfinite(draws))
    for a, row in zip(shapes, draws):
        res = scipy.stats.kstest(row, scipy.stats.loggamma(a).cdf)
        # 11 shapes x 2 dtypes: a threshold of 1e-4 keeps the family-wise false alarm rate small.
        assert res.pvalue > 1e-4, (a, res.statistic, res.pvalue)


@pytest.mark.parametrize("shape", _GAMMA_SHAPES)
def test_gamma_moments(shape):
    """Mean and variance of `Gamma(a)` draws (both `a`) and of their logs (digamma, trigamma)."""
    import scipy.special

    n = 100_000
    conc = jnp.full((n,), shape, jnp.float32)
    logs = np.asarray(_log_gamma_draws(jr.key(22), conc), np.float64)
    assert np.all(np.isfinite(logs))
    z = _z_mean(logs, scipy.special.digamma(shape))
    assert abs(z) < Z_MAX, z
    z = _z_var(logs, scipy.special.polygamma(1, shape))
    assert abs(z) < Z_MAX, z
    if shape >= 0.05:  # below, the variates underflow in float32; their logs were checked above
        g = np.asarray(sample_gamma(jr.key(23), conc), np.float64) / shape  # scaled to mean 1
        assert abs(_z_mean(g, 1.0)) < Z_MAX
        assert abs(_z_var(g, 1.0 / shape)) < Z_MAX


def test_log_gamma_special_values_and_shapes():
    conc = jnp.asarray([0.0, -1.0, jnp.nan, jnp.inf, 2.0, 1e-30], jnp.float32)
    out = np.asarray(sample_log_gamma(jr.key(24), conc))
    assert out[0] == -np.inf and np.isnan(out[1]) and np.isnan(out[2]) and out[3] == np.inf
    assert np.all(np.isfinite(out[4:]))
    assert sample_log_gamma(jr.key(0), jnp.ones((3, 4, 5), jnp.float32)).shape == (3, 4, 5)
    assert sample_log_gamma(jr.key(0), jnp.ones((), jnp.float32)).shape == ()
    # Independent per key, and vmappable over keys and shapes.
    batch = jax.vmap(sample_log_gamma)(jr.split(jr.key(25), 4), jnp.full((4, 6), 2.0, jnp.float32))
    assert batch.shape == (4, 6) and len(np.unique(np.asarray(batch))) == 24


def test_bartlett_diagonal_is_chi_squared():
    """The diagonal of the batched Bartlett factor: `A_ii^2 ~ chi2(nu - i)`, per state (KS test)."""
    import scipy.stats

    n, D = 20_000, 3
    nu = jnp.asarray([4.0, 40.0], jnp.float32)
    S_chol = jnp.broadcast_to(jnp.eye(D, dtype=jnp.float32), (2, D, D))
    Q = jax.jit(jax.vmap(sample_inv_wishart_chol, in_axes=(0, None, None)))(jr.split(jr.key(26), n), nu, S_chol)
    # With S = I, Q^{-1} = A A^T, whose [0, 0] entry is A_00^2 ~ chi2(nu).
    P00 = np.linalg.inv(np.asarray(Q, np.float64))[..., 0, 0]
    for j, v in enumerate(np.asarray(nu)):
        res = scipy.stats.kstest(P00[:, j], scipy.stats.chi2(v).cdf)
        assert res.pvalue > 1e-4, (v, res.statistic, res.pvalue)
