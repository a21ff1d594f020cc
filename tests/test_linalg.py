"""The plain-JAX Cholesky factor, triangular solves and SPD inverse, against NumPy; and no
LAPACK call in a compiled sweep (jaxlib 0.10's batched LAPACK kernels can deadlock a
two-core CPU; see `arhmm_eqx._linalg`)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import arhmm_eqx as ae
from arhmm_eqx import _linalg


@pytest.mark.parametrize("n, batch", [(1, ()), (3, (5,)), (41, (4,)), (10, (2, 3))])
def test_against_numpy_float64(n, batch):
    rng = np.random.default_rng(n)
    M = rng.normal(size=batch + (n, n))
    A = M @ np.swapaxes(M, -1, -2) + n * np.eye(n)
    B = rng.normal(size=batch + (n, 4))
    with jax.enable_x64(True):
        L_ref = np.linalg.cholesky(A)
        np.testing.assert_allclose(np.asarray(_linalg.cholesky(jnp.asarray(A))), L_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(_linalg.solve_lower(jnp.asarray(L_ref), jnp.asarray(B))),
                                   np.linalg.solve(L_ref, B), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(_linalg.solve_lower_transposed(jnp.asarray(L_ref), jnp.asarray(B))),
                                   np.linalg.solve(np.swapaxes(L_ref, -1, -2), B), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(_linalg.spd_inverse(jnp.asarray(A))), np.linalg.inv(A),
                                   rtol=1e-10, atol=1e-12)


def test_not_positive_definite_gives_nan():
    L = _linalg.cholesky(jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    assert np.all(np.isnan(np.asarray(L)))
    assert np.all(np.isfinite(np.asarray(_linalg.cholesky(jnp.eye(2)))))


def test_gradient_matches_lapack_cholesky():
    a = jr.normal(jr.key(0), (3, 3))
    f = lambda chol: lambda a: jnp.sum(chol(a @ a.T + 3.0 * jnp.eye(3)) ** 2)
    np.testing.assert_allclose(np.asarray(jax.grad(f(_linalg.cholesky))(a)),
                               np.asarray(jax.grad(f(jnp.linalg.cholesky))(a)), rtol=1e-4, atol=1e-5)


def test_compiled_sweep_has_no_lapack_call():
    N, T, D, L, K = 2, 30, 3, 2, 4
    x = jr.normal(jr.key(1), (N, T, D))
    mask = jnp.ones((N, T))
    model = ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L), x, mask, key=jr.key(2))
    sweep = lambda k, m: ae.gibbs_step(k, m, x, mask)
    init = lambda k, m: ae.ARHMM.from_prior(m.hyperparams, x, mask, key=k)
    for fn in (sweep, init):
        text = jax.jit(fn).lower(jr.key(3), model).as_text()
        assert "lapack" not in text.lower()
    # positive control: the check sees a LAPACK call where there is one (on CPU)
    if jax.default_backend() == "cpu":
        assert "lapack" in jax.jit(jnp.linalg.cholesky).lower(jnp.eye(3)).as_text().lower()


def test_solves_broadcast_batch_dimensions():
    rng = np.random.default_rng(7)
    L = np.tril(rng.normal(size=(4, 4))) + 4.0 * np.eye(4)
    B = rng.normal(size=(3, 4, 2))
    for solve, ref in ((_linalg.solve_lower, L), (_linalg.solve_lower_transposed, L.T)):
        out = np.asarray(solve(jnp.asarray(L, jnp.float32), jnp.asarray(B, jnp.float32)))
        np.testing.assert_allclose(out, np.linalg.solve(ref, B), rtol=1e-4, atol=1e-5)
