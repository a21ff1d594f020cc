"""AR sufficient statistics and the MNIW conditional of `(Ab, Q)` (model.md §2) against direct formulas."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import arhmm_eqx._ar as ar


Z_MAX = 5.0


def _stats_numpy(x, mask, z, K, L):
    """`sum_t mask * v v^T` per state by a loop over frames, `v_t = [x[t-L], ..., x[t-1], 1, x[t]]`."""
    N, T, D = x.shape
    AD = D * L + 1 + D
    out = np.zeros((K, AD, AD))
    for n in range(N):
        for t in range(L, T):
            v = np.concatenate([x[n, t - L : t].reshape(-1), [1.0], x[n, t]])
            out[z[n, t - L]] += mask[n, t] * np.outer(v, v)
    return out


def _posterior_numpy(stats, nu_0, S_0, M_0, K_0):
    """`(K_n, M_n, S_n, nu_n)` of model.md §2 for one state's statistics."""
    A = M_0.shape[1]
    S_uu, S_yu, S_yy = stats[:A, :A], stats[A:, :A], stats[A:, A:]
    n_k = stats[A - 1, A - 1]
    K_0_inv = np.linalg.inv(K_0)
    K_n = np.linalg.inv(K_0_inv + S_uu)
    M_n = (M_0 @ K_0_inv + S_yu) @ K_n
    S_n = S_0 + S_yy + M_0 @ K_0_inv @ M_0.T - M_n @ np.linalg.inv(K_n) @ M_n.T
    return K_n, M_n, S_n, nu_0 + n_k


def _z_mean(samples, expected):
    samples = np.asarray(samples, np.float64)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    return (samples.mean(axis=0) - expected) / se


def _z_cov(flat, expected_cov):
    flat = np.asarray(flat, np.float64)
    n = flat.shape[0]
    c = flat - flat.mean(axis=0)
    prod = c[:, :, None] * c[:, None, :]
    est = prod.mean(axis=0) * n / (n - 1)
    se = prod.std(axis=0, ddof=1) / np.sqrt(n)
    return (est - expected_cov) / se


def _problem(seed, N=2, T=15, D=2, L=2, K=3):
    """Data, a mask with holes, and a `z` that uses state `K-1` only on masked frames (so it is empty)."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(N, T, D)), axis=1) * 0.5
    mask = np.ones((N, T))
    mask[0, 9:] = 0.0
    mask[1, [3, 7]] = 0.0
    z = rng.integers(0, K - 1, size=(N, T - L))
    z[0, 9 - L :] = K - 1  # empty state: assigned only where the frame is masked
    A = D * L + 1
    hyper = dict(
        nu_0=D + 10.0,  # large enough that the prior Q has finite 4th moments (SE of the empty state)
        S_0=np.array([[0.6, 0.1], [0.1, 0.4]]),
        M_0=rng.normal(size=(D, A)) * 0.3,
        K_0=np.diag(rng.uniform(0.5, 2.0, size=A)),
    )
    return x, mask, z, hyper


def _stats_tolerance(x, mask, z, K, L, dtype):
    """Entrywise tolerance: float64 rounding is ~1e-16 of the sum of |v_i v_j| (1e-12 leaves room);
    float32 sums of up to ~1e5 terms, blocked or sequential, stay well within 1e-5 of that sum."""
    scale = _stats_numpy(np.abs(x), mask, z, K, L)  # sum_t w |v_i| |v_j| (the constant 1 stays 1)
    return (1e-12 if dtype == jnp.float64 else 1e-5) * scale


def _library_stats(x, mask, z, K, L, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        stats = ar.ar_sufficient_stats(
            jnp.asarray(x, dtype), jnp.asarray(mask, dtype), jnp.asarray(z, jnp.int32), num_states=K, nlags=L
        )
        assert stats.dtype == dtype
        return np.asarray(stats, np.float64)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
def test_sufficient_stats_match_loop(dtype):
    x, mask, z, _ = _problem(0)
    K, L = 3, 2
    x = x.astype(dtype).astype(np.float64)  # the reference sees the same rounded inputs
    stats = _library_stats(x, mask, z, K, L, dtype)
    ref = _stats_numpy(x, mask, z, K, L)
    assert np.all(np.abs(stats - ref) <= _stats_tolerance(x, mask, z, K, L, dtype))
    A = x.shape[-1] * L + 1
    # Entry counts the valid frames of each state; the state used only on masked frames has 0.
    valid = mask[:, L:]
    counts = [valid[z == k].sum() for k in range(K)]
    np.testing.assert_array_equal(stats[:, A - 1, A - 1], counts)
    assert counts[K - 1] == 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
def test_sufficient_stats_small_blocks(monkeypatch, dtype):
    # Blocks of 3 frames (not a divisor of any state's frame count): the padding of each state's
    # last block and the sum over blocks are exercised.
    monkeypatch.setattr(ar, "STATS_BLOCK", 3)
    x, mask, z, _ = _problem(1)
    K, L = 3, 2
    x = x.astype(dtype).astype(np.float64)
    stats = _library_stats(x, mask, z, K, L, dtype)
    ref = _stats_numpy(x, mask, z, K, L)
    assert np.all(np.abs(stats - ref) <= _stats_tolerance(x, mask, z, K, L, dtype))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
def test_sufficient_stats_many_frames(dtype):
    # 180000 frames, unequal states: many blocks per state, and more frames than one chunk of
    # 2**22 outer-product entries (AD = 5).
    N, T, D, L, K = 3, 60_001, 2, 1, 4
    rng = np.random.default_rng(2)
    x = rng.normal(size=(N, T, D)).astype(dtype).astype(np.float64)
    mask = (rng.uniform(size=(N, T)) > 0.1).astype(np.float64)
    z = rng.choice(K, size=(N, T - L), p=[0.55, 0.3, 0.149, 0.001])
    stats = _library_stats(x, mask, z, K, L, dtype)
    AD = D * L + 1 + D
    v = np.concatenate([x[:, :-1], np.ones((N, T - 1, 1)), x[:, 1:]], axis=-1).reshape(-1, AD)
    w = mask[:, 1:].reshape(-1)
    zf = z.reshape(-1)
    ref = np.stack([(v[zf == k] * w[zf == k, None]).T @ v[zf == k] for k in range(K)])
    scale = np.stack([(np.abs(v[zf == k]) * w[zf == k, None]).T @ np.abs(v[zf == k]) for k in range(K)])
    assert np.all(np.abs(stats - ref) <= (1e-12 if dtype == jnp.float64 else 1e-5) * scale)


def _f64(hyper):
    return {k: jnp.asarray(v, jnp.float64) for k, v in hyper.items()}


def test_posterior_joint_matches_formulas():
    x, mask, z, hyper = _problem(3)
    K, L = 3, 2
    A = hyper["M_0"].shape[1]
    stats = _stats_numpy(x, mask, z, K, L)
    with jax.enable_x64(True):
        G, nu_n = ar.mniw_posterior_joint(jnp.asarray(stats), **_f64(hyper))
    G, nu_n = np.asarray(G), np.asarray(nu_n)
    for k in range(K):
        K_n, M_n, S_n, nu = _posterior_numpy(stats[k], **hyper)
        P = np.linalg.inv(K_n)
        np.testing.assert_allclose(G[k, :A, :A], P, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(G[k, A:, :A], M_n @ P, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(G[k, :A, A:], (M_n @ P).T, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(G[k, A:, A:], S_n + M_n @ P @ M_n.T, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(nu_n[k], nu, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
def test_resample_ar_params_posterior_and_empty_state_moments(dtype):
    x, mask, z, hyper = _problem(5)
    K, L, D, n = 3, 2, 2, 20_000
    x = x.astype(dtype).astype(np.float64)
    hyper = {k: np.asarray(v, dtype).astype(np.float64) for k, v in hyper.items()}
    stats = _stats_numpy(x, mask, z, K, L)
    with jax.enable_x64(dtype == jnp.float64):
        xj, mj, zj = jnp.asarray(x, dtype), jnp.asarray(mask, dtype), jnp.asarray(z, jnp.int32)
        h = {k: jnp.asarray(v, dtype) for k, v in hyper.items()}
        draw = jax.jit(jax.vmap(lambda k: ar.resample_ar_params(k, xj, mj, zj, **h, num_states=K, nlags=L)))
        Ab, Q = (np.asarray(v, np.float64) for v in draw(jr.split(jr.key(22), n)))
    assert Ab.shape == (n, K, D, D * L + 1) and Q.shape == (n, K, D, D)
    for k in range(K):
        K_n, M_n, S_n, nu = _posterior_numpy(stats[k], **hyper)
        EQ = S_n / (nu - D - 1)
        zq, zab = _z_mean(Q[:, k], EQ), _z_mean(Ab[:, k], M_n)
        assert np.abs(zq).max() < Z_MAX, (k, zq)
        assert np.abs(zab).max() < Z_MAX, (k, zab)
        zc = _z_cov(Ab[:, k].reshape(n, -1), np.kron(EQ, K_n))
        assert np.abs(zc).max() < Z_MAX, (k, zc)
    # The empty state (its only frames are masked) is a draw from the prior.
    EQ0 = hyper["S_0"] / (hyper["nu_0"] - D - 1)
    assert np.abs(_z_mean(Q[:, K - 1], EQ0)).max() < Z_MAX
    assert np.abs(_z_mean(Ab[:, K - 1], hyper["M_0"])).max() < Z_MAX
    assert np.abs(_z_cov(Ab[:, K - 1].reshape(n, -1), np.kron(EQ0, hyper["K_0"]))).max() < Z_MAX
    # The states are drawn with independent keys: Q of state 0 and state 1 are uncorrelated.
    a, b = Q[:, 0, 0, 0], Q[:, 1, 0, 0]
    assert abs(np.corrcoef(a, b)[0, 1]) * np.sqrt(n) < Z_MAX


def test_stable_argsort_of_small_keys_equals_numpy():
    """Both paths of the packed sort: key and index in one int32, and the pair sort when they do not fit."""
    rng = np.random.default_rng(0)
    for M, K in [(1, 1), (2, 3), (1000, 5), (70_000, 101), (5, 2**28)]:
        keys = rng.integers(0, K, M)
        out = np.asarray(ar._stable_argsort_small_keys(jnp.asarray(keys, jnp.int32), K))
        np.testing.assert_array_equal(out, np.argsort(keys, kind="stable"), err_msg=f"{M=} {K=}")
