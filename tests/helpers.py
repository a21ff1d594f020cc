"""Shared test helpers: the small shared problem, a K**T path enumerator, a random well-conditioned
model, a pooled chi-square test."""

import itertools

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import scipy.special
import scipy.stats


# The small problem shared by the driver tests (chains, checks, diagnostics, reproducibility,
# sharding, vmap/jit): the same sizes in every file, so compiled programs are reused.
SMALL_SIZES = (4, 2, 2, 3, 40)  # K, D, L, N, T


def small_walk(N: int = SMALL_SIZES[3], T: int = SMALL_SIZES[4], D: int = SMALL_SIZES[1]):
    """`(x, mask)`: `N` random walks of `T` frames in `D` dimensions; sequence 1 ends with 7
    frames of padding."""
    x = jnp.cumsum(0.3 * jr.normal(jr.key(0), (N, T, D)), axis=1)
    mask = jnp.ones((N, T)).at[1, T - 7 :].set(0.0)
    return x, mask


def all_paths(K: int, Tz: int) -> np.ndarray:
    """All `K**Tz` state paths, shape `(K**Tz, Tz)`, in the order of `path_codes`."""
    return np.array(list(itertools.product(range(K), repeat=Tz)), dtype=np.int64).reshape(-1, Tz)


def path_codes(z, K: int) -> np.ndarray:
    """Index of each path `z[..., :]` in `all_paths(K, Tz)` (base-`K` number, first frame most significant)."""
    z = np.asarray(z, dtype=np.int64)
    weights = K ** np.arange(z.shape[-1] - 1, -1, -1, dtype=np.int64)
    return z @ weights


def enumerate_paths(ll, pi):
    """Exact posterior of one sequence by enumerating all `K**Tz` paths in float64.

    `ll` `(Tz, K)`: masked emission log-likelihoods; `pi` `(K, K)`; uniform initial state.

    **Returns:** `(log p(x), smoothed marginals (Tz, K), path probabilities (K**Tz,))`,
    the probabilities indexed by `path_codes`.
    """
    ll = np.asarray(ll, dtype=np.float64)
    log_pi = np.log(np.asarray(pi, dtype=np.float64))
    Tz, K = ll.shape
    paths = all_paths(K, Tz)
    logp = -np.log(K) + ll[np.arange(Tz), paths].sum(axis=1)
    if Tz > 1:
        logp = logp + log_pi[paths[:, :-1], paths[:, 1:]].sum(axis=1)
    log_z = scipy.special.logsumexp(logp)
    probs = np.exp(logp - log_z)
    marginals = np.stack([np.bincount(paths[:, t], weights=probs, minlength=K) for t in range(Tz)])
    return log_z, marginals, probs


def random_model(key, K: int, D: int, L: int, dtype=jnp.float32):
    """A random, well-conditioned `(Ab, Q, pi, betas)` as JAX arrays of `dtype`.

    `Ab` has a contracting dynamics part (entries of size ~0.3 / sqrt(D L)) and a bias;
    `Q = B B^T / D + 0.3 I` (eigenvalues at least 0.3); `pi` rows are Dirichlet draws,
    sticky-ish and not symmetric; `betas` a Dirichlet(1) draw. Drawn with numpy from a seed
    taken from `key` (cheaper than compiling JAX's Gamma sampler in every test).
    """
    rng = np.random.default_rng(np.asarray(jr.key_data(key)).ravel().tolist())
    A = D * L + 1
    Ab = rng.normal(size=(K, D, A)) * 0.3 / np.sqrt(D * L)
    B = rng.normal(size=(K, D, D))
    Q = B @ np.swapaxes(B, -1, -2) / D + 0.3 * np.eye(D)
    pi = np.stack([rng.dirichlet(2.0 + 3.0 * np.eye(K)[k]) for k in range(K)])
    betas = rng.dirichlet(np.ones(K))
    return tuple(jnp.asarray(a, dtype) for a in (Ab, Q, pi, betas))


def chi2_pvalue(counts, probs, min_expected: float = 5.0) -> float:
    """Pearson chi-square goodness-of-fit p-value of observed `counts` against exact `probs`.

    Categories with an expected count below `min_expected` are pooled into one bin (the
    pooled bin is merged with the smallest remaining one if it is still too small).
    """
    counts = np.asarray(counts, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    n = counts.sum()
    expected = n * probs / probs.sum()
    order = np.argsort(expected)
    expected, counts = expected[order], counts[order]
    small = expected < min_expected
    pooled_e, pooled_c = expected[small].sum(), counts[small].sum()
    expected, counts = expected[~small], counts[~small]
    if pooled_e > 0:
        if pooled_e < min_expected and expected.size > 0:
            expected[0] += pooled_e
            counts[0] += pooled_c
        else:
            expected = np.append(expected, pooled_e)
            counts = np.append(counts, pooled_c)
    if expected.size < 2:
        raise ValueError("chi-square test needs at least two bins; draw more samples.")
    return float(scipy.stats.chisquare(counts, expected).pvalue)


def reference_ar_ll(x, mask, Ab, Q) -> np.ndarray:
    """`ll[n, t, k] = log N(x[n, t+L] | Ab[k] u, Q[k]) * mask[n, t+L]` with scipy, in float64.

    `u = [x[t-L], ..., x[t-1], 1]` (oldest lag first). Masked rows are exactly 0 (set with
    `where`, so non-finite values in masked frames give 0 too).
    """
    x = np.asarray(x, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)
    Ab = np.asarray(Ab, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    K, D, A = Ab.shape
    L = (A - 1) // D
    N, T, _ = x.shape
    ll = np.zeros((N, T - L, K))
    for n in range(N):
        for t in range(L, T):
            if mask[n, t] == 0:
                continue
            u = np.concatenate([x[n, t - L : t].reshape(-1), [1.0]])
            for k in range(K):
                ll[n, t - L, k] = scipy.stats.multivariate_normal(Ab[k] @ u, Q[k]).logpdf(x[n, t])
    return ll
