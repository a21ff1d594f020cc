"""The exact table-count sampler (model.md §1): `mbar = sum_{k<n} Bernoulli(a / (a + s + k))`.

- small `n`: the whole distribution against the exact pmf (convolution of Bernoullis), chi-square;
- `n ~ 1e6`: mean and variance against closed forms, z-scores from the Monte Carlo standard errors;
- `log_survival_gap` against mpmath;
- the `(K, K)` sampler under `jit` and `vmap`;
- a mutant that forgets the stickiness `s` is rejected by the same tests.
"""

import itertools

import jax
import jax.numpy as jnp
import jax.random as jr
import mpmath
import numpy as np
import pytest
import scipy.special as sps
import scipy.stats
from oracles import sample_crt

from arhmm_eqx._table_counts import log_survival_gap, sample_override_table_counts


Z_MAX = 5.0
P_MIN = 1e-4

# One compiled sampler per dtype: n, a, s are traced, so every configuration reuses it.
_crt_draws = jax.jit(jax.vmap(sample_crt, in_axes=(0, None, None, None)))


def _mutant_crt(key, n, a, s):
    """A wrong sampler: forgets the stickiness `s` (uses the off-diagonal law on the diagonal)."""
    return sample_crt(key, n, a, 0.0 * s)


_mutant_draws = jax.jit(jax.vmap(_mutant_crt, in_axes=(0, None, None, None)))


def _exact_pmf(n, a, s):
    """pmf of `sum_{k<n} Bernoulli(a / (a + s + k))` on `0..n`, by convolution in float64."""
    pmf = np.array([1.0])
    for k in range(int(n)):
        p = a / (a + s + k)
        pmf = np.concatenate([pmf * (1 - p), [0.0]]) + np.concatenate([[0.0], pmf * p])
    return pmf


def _exact_mean_var(n, a, s):
    """Exact mean `sum p_k` and variance `sum p_k (1 - p_k)` through digamma and trigamma."""
    mean = a * (sps.digamma(a + s + n) - sps.digamma(a + s))
    sum_p2 = a * a * (sps.polygamma(1, a + s) - sps.polygamma(1, a + s + n))
    return mean, mean - sum_p2


def _chi2_pvalue(draws, pmf, min_expected=5.0):
    """Pearson chi-square p-value of integer `draws` against `pmf`, pooling bins with expected count < 5.

    A draw on a value of probability zero gives p = 0; if only one bin is left, every draw must be in it.
    """
    draws = np.asarray(draws)
    counts = np.bincount(draws.astype(np.int64), minlength=pmf.size).astype(np.float64)
    assert counts.size == pmf.size, "a draw fell outside 0..n"
    if counts[pmf == 0].sum() > 0:
        return 0.0
    expected = pmf * draws.size
    big = expected >= min_expected
    exp_b, obs_b = expected[big], counts[big]
    pooled_e, pooled_o = expected[~big].sum(), counts[~big].sum()
    if pooled_e > 0:
        if pooled_e >= min_expected or exp_b.size < 2:
            exp_b, obs_b = np.append(exp_b, pooled_e), np.append(obs_b, pooled_o)
        else:  # merge a too-small pooled bin into the smallest big one
            i = np.argmin(exp_b)
            exp_b, obs_b = exp_b.copy(), obs_b.copy()
            exp_b[i] += pooled_e
            obs_b[i] += pooled_o
    if exp_b.size < 2:
        return 1.0 if obs_b.sum() == draws.size else 0.0
    return float(scipy.stats.chisquare(obs_b, exp_b * obs_b.sum() / exp_b.sum()).pvalue)


def _bernoulli_sum_numpy(rng, n, a, s, size):
    """Direct simulation, one Bernoulli per customer (only for small `n`)."""
    p = a / (a + s + np.arange(int(n)))
    return (rng.uniform(size=(size, int(n))) < p).sum(axis=1)


def _z_mean_var(draws, mean, var):
    """z-scores of the sample mean and sample variance (SE of the variance from the fourth moment)."""
    x = np.asarray(draws, np.float64)
    m = x.size
    c = x - x.mean()
    s2 = (c**2).sum() / (m - 1)
    z_mean = (x.mean() - mean) / np.sqrt(s2 / m)
    z_var = (s2 - var) / np.sqrt(((c**4).mean() - s2**2) / m)
    return z_mean, z_var


# (a, s): off-diagonal (s = 0) with tiny to typical alpha * beta, moderate and very sticky diagonals.
_SMALL_AS = [(0.01, 0.0), (0.7, 0.0), (5.7, 0.0), (1.0, 3.0), (2.0, 50.0), (0.3, 1e3), (5.7, 1e3)]
_SMALL_N = [1, 2, 5, 20, 60]


@pytest.mark.parametrize("a, s", _SMALL_AS)
def test_small_n_matches_exact_pmf(a, s):
    draws_per_config = 20_000
    rng = np.random.default_rng(0)
    for i, n in enumerate(_SMALL_N):
        key = jr.fold_in(jr.key(100), 1000 * i + int(10 * a) + int(s))
        d = np.asarray(_crt_draws(jr.split(key, draws_per_config), float(n), a, s))
        assert d.dtype == np.float32  # the default dtype
        assert np.all(d == np.round(d)) and d.min() >= 0 and d.max() <= n
        if s == 0:
            assert d.min() >= 1  # the first customer of a restaurant always opens a table
        pmf = _exact_pmf(n, a, s)
        p = _chi2_pvalue(d, pmf)
        assert p > P_MIN, (n, a, s, p)
        # Sanity check of the reference itself: a direct Bernoulli-sum simulation fits the same pmf.
        assert _chi2_pvalue(_bernoulli_sum_numpy(rng, n, a, s, draws_per_config), pmf) > P_MIN


def test_small_n_float64():
    with jax.enable_x64(True):
        for i, (n, a, s) in enumerate([(20, 0.7, 0.0), (60, 2.0, 50.0), (5, 5.7, 1e3)]):
            d = np.asarray(_crt_draws(jr.split(jr.key(200 + i), 20_000), float(n), a, s))
            assert d.dtype == np.float64
            assert _chi2_pvalue(d, _exact_pmf(n, a, s)) > P_MIN


def test_mutant_ignoring_stickiness_fails_small_n():
    n, a, s = 60, 1.0, 50.0
    pmf = _exact_pmf(n, a, s)
    keys = jr.split(jr.key(300), 20_000)
    assert _chi2_pvalue(np.asarray(_crt_draws(keys, float(n), a, s)), pmf) > P_MIN
    assert _chi2_pvalue(np.asarray(_mutant_draws(keys, float(n), a, s)), pmf) < P_MIN


def test_exact_mean_var_closed_form_matches_sum():
    # The digamma/trigamma forms used as references equal the float64 sums over customers.
    for n, a, s in [(1_000_000, 5.7, 1e3), (1_000_000, 0.01, 0.0), (2_000_000, 0.5, 1e8)]:
        p = a / (a + s + np.arange(n, dtype=np.float64))
        mean, var = _exact_mean_var(n, a, s)
        np.testing.assert_allclose(mean, p.sum(), rtol=1e-9)
        np.testing.assert_allclose(var, (p * (1 - p)).sum(), rtol=1e-9)


# (n, a, s) with n ~ 1e6: diagonals with kappa from 1e2 to 1e8, and off-diagonal cells.
_LARGE = [
    (1_000_000, 5.7, 1e2),
    (1_000_000, 0.01, 1e3),
    (1_300_000, 1.0, 1e3),
    (1_000_000, 5.7, 1e5),
    (2_000_000, 0.5, 1e6),
    (1_000_000, 5.7, 1e8),
    (1_000_000, 5.7, 0.0),
    (1_000_000, 0.01, 0.0),
]


@pytest.mark.slow
@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_large_n_mean_and_variance(x64):
    draws_per_config = 20_000
    with jax.enable_x64(x64):
        for i, (n, a, s) in enumerate(_LARGE):
            d = np.asarray(_crt_draws(jr.split(jr.key(400 + i), draws_per_config), float(n), a, s))
            assert d.dtype == (np.float64 if x64 else np.float32)
            assert np.all(d == np.round(d)) and d.min() >= 0 and d.max() <= n
            z_mean, z_var = _z_mean_var(d, *_exact_mean_var(n, a, s))
            assert abs(z_mean) < Z_MAX and abs(z_var) < Z_MAX, (n, a, s, z_mean, z_var)


def test_mutant_ignoring_stickiness_fails_large_diagonal():
    n, a, s = 1_000_000, 1.0, 1e3
    keys = jr.split(jr.key(500), 4_000)
    mean, var = _exact_mean_var(n, a, s)
    z_good = _z_mean_var(np.asarray(_crt_draws(keys, float(n), a, s)), mean, var)
    z_bad = _z_mean_var(np.asarray(_mutant_draws(keys, float(n), a, s)), mean, var)
    assert max(abs(z) for z in z_good) < Z_MAX, z_good
    assert abs(z_bad[0]) > Z_MAX, z_bad


# log_survival_gap(x, d, a) = h(x + d) - h(x), h(x) = lgamma(x + a) - lgamma(x).
_XS = [0.3, 1.0, 2.5, 10.0, 40.0, 66.0, 70.0, 150.0, 1e3, 1e5, 1e7, 1e8 + 0.5]
_DS = [0.0, 1.0, 3.0, 17.0, 500.0, 1e4, 1e6]
_AS = [0.01, 0.3, 1.0, 2.5, 5.7]


def _gap_reference(grid):
    mpmath.mp.dps = 40
    lg = mpmath.loggamma
    out = []
    for x, d, a in grid:
        x, d, a = (mpmath.mpf(float(v)) for v in (x, d, a))
        out.append(float(lg(x + d + a) - lg(x + d) - lg(x + a) + lg(x)))
    return np.array(out)


def _direct_rounding_scale(x, d, a):
    """Sum of `max(1, |lgamma|)` over the four arguments of the direct part of the documented split.

    Below `X0 = 10 (1 + a)` (module docstring) the gap is a difference of `lgamma` values
    taken at `x` and `min(x + d, X0)`; each carries an absolute rounding error of a few ulps
    of `max(1, |lgamma|)`.
    """
    X0 = 10.0 * (1.0 + a)
    m = np.minimum(x + d, np.maximum(x, X0))
    terms = [sps.gammaln(x), sps.gammaln(x + a), sps.gammaln(m), sps.gammaln(m + a)]
    return sum(np.maximum(1.0, np.abs(t)) for t in terms)


def test_log_survival_gap_float64():
    grid = np.array(list(itertools.product(_XS, _DS, _AS)))
    ref = _gap_reference(grid)
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(log_survival_gap)(*(jnp.asarray(grid[:, i], jnp.float64) for i in range(3))))
    # Tolerance: the sampler compares the gap with an Exp(1) variate, so a gap error eps changes the
    # probability of any jump by at most eps, and by a relative eps when the gap is small. 1e-6 is
    # far below what any Monte Carlo test here resolves (SE ~ 1e-2) and above the documented
    # truncation of the asymptotic series (first dropped term a^6 / (30 x^5) <= ~8.5e-7 at x = X0).
    # (The 1e-30 absorbs mpmath's own cancellation noise, ~1e-41, where the exact gap is 0 at d = 0.)
    tol = 1e-6 * np.minimum(1.0, np.abs(ref)) + 1e-30
    err = np.abs(got - ref)
    assert np.all(err <= tol), grid[np.argmax(err / tol)]
    np.testing.assert_array_equal(got[grid[:, 1] == 0], 0.0)


def test_log_survival_gap_float32():
    grid32 = np.array(list(itertools.product(_XS, _DS, _AS)), dtype=np.float32)
    grid = grid32.astype(np.float64)  # the reference at the float32-rounded inputs
    ref = _gap_reference(grid)
    f = jax.jit(log_survival_gap)
    got = np.asarray(f(*(jnp.asarray(grid32[:, i]) for i in range(3))), np.float64)
    # Tolerance: a few float32 ulps of the lgamma values actually differenced (below X0) and of the
    # result, plus the float64 tolerance above. Differencing lgamma at large x (e.g. 1e8) would
    # instead cost ulps of lgamma(1e8) ~ 1.7e9, which this tolerance rejects (checked below).
    eps = float(np.finfo(np.float32).eps)
    x, d, a = grid.T
    tol = 8 * eps * (_direct_rounding_scale(x, d, a) + np.abs(ref)) + 1e-6 * np.minimum(1.0, np.abs(ref))
    err = np.abs(got - ref)
    assert np.all(err <= tol), grid[np.argmax(err / tol)]
    # The tolerance has power: a naive float32 difference of lgamma values fails it.
    naive = (
        jax.scipy.special.gammaln(jnp.asarray(grid32[:, 0] + grid32[:, 1] + grid32[:, 2]))
        - jax.scipy.special.gammaln(jnp.asarray(grid32[:, 0] + grid32[:, 1]))
        - jax.scipy.special.gammaln(jnp.asarray(grid32[:, 0] + grid32[:, 2]))
        + jax.scipy.special.gammaln(jnp.asarray(grid32[:, 0]))
    )
    assert np.any(np.abs(np.asarray(naive, np.float64) - ref) > tol)


def _count_matrix():
    counts = np.array([[1_000_000.0, 3.0, 0.0], [0.0, 200_000.0, 7.0], [12.0, 0.0, 1_500_000.0]])
    betas = np.array([0.5, 0.3, 0.2])
    return counts, betas, 5.7, 1e3


def test_override_table_counts_jit_vmap_and_moments():
    counts, betas, alpha, kappa = _count_matrix()
    n_draws = 6_000
    args = (
        jnp.asarray(counts, jnp.float32),
        jnp.asarray(betas, jnp.float32),
        jnp.asarray(alpha, jnp.float32),
        jnp.asarray(kappa, jnp.float32),
    )
    draw = jax.jit(jax.vmap(sample_override_table_counts, in_axes=(0, None, None, None, None)))
    m = np.asarray(draw(jr.split(jr.key(600), n_draws), *args))
    assert m.shape == (n_draws, 3, 3) and m.dtype == np.float32
    assert np.all(m == np.round(m))
    assert np.all(m[:, counts == 0] == 0)
    assert np.all((m >= 0) & (m <= counts))
    off = (counts > 0) & ~np.eye(3, dtype=bool)
    assert np.all(m[:, off] >= 1)  # an off-diagonal restaurant with customers has a table
    for i, j in itertools.product(range(3), range(3)):
        if counts[i, j] == 0:
            continue
        s = kappa if i == j else 0.0
        z_mean, z_var = _z_mean_var(m[:, i, j], *_exact_mean_var(counts[i, j], alpha * betas[j], s))
        assert abs(z_mean) < Z_MAX and abs(z_var) < Z_MAX, (i, j, z_mean, z_var)
    # Cells are drawn with independent keys: the diagonal cells are uncorrelated.
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        r = np.corrcoef(m[:, i, i], m[:, j, j])[0, 1]
        assert abs(r) * np.sqrt(n_draws) < Z_MAX, (i, j, r)


def test_override_table_counts_vmap_over_count_matrices_equals_loop(getkey):
    counts, betas, alpha, kappa = _count_matrix()
    rng = np.random.default_rng(7)
    batch = np.stack([counts, rng.integers(0, 30, size=(3, 3)).astype(float), np.zeros((3, 3)), counts[::-1]])
    keys = jr.split(getkey(), batch.shape[0])
    with jax.enable_x64(True):
        b, al, ka = jnp.asarray(betas), jnp.asarray(alpha), jnp.asarray(kappa)
        f = jax.jit(sample_override_table_counts)
        vm = np.asarray(jax.jit(jax.vmap(f, in_axes=(0, 0, None, None, None)))(keys, jnp.asarray(batch), b, al, ka))
        loop = np.stack([np.asarray(f(k, jnp.asarray(c), b, al, ka)) for k, c in zip(keys, batch)])
    assert vm.dtype == np.float64
    np.testing.assert_array_equal(vm, loop)
    assert np.all(vm[batch == 0] == 0) and np.all(vm <= batch) and np.all(vm == np.round(vm))
