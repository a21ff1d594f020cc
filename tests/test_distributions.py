"""Moments of the random draws in `_distributions.py` against closed forms.

Every check is a z-score of a Monte Carlo estimate against its exact value, with the
standard error computed from the same draws; |z| < 5 for every entry.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from arhmm_eqx._distributions import sample_dirichlet, sample_inv_wishart, sample_matrix_normal, sample_mniw


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
