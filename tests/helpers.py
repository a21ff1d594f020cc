"""Shared test helpers: a K**T path enumerator, a random well-conditioned model, a pooled chi-square test."""

import itertools

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import scipy.special
import scipy.stats


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
    """A random, well-conditioned `(Ab, Q, pi, betas)`.

    `Ab` has a contracting dynamics part (entries of size ~0.3 / sqrt(D L)) and a bias;
    `Q = B B^T / D + 0.3 I` (eigenvalues at least 0.3); `pi` rows are Dirichlet(2) draws,
    sticky-ish and not symmetric; `betas` a Dirichlet(1) draw.
    """
    k_ab, k_q, k_pi, k_b = jr.split(key, 4)
    A = D * L + 1
    Ab = jr.normal(k_ab, (K, D, A), dtype=dtype) * float(0.3 / np.sqrt(D * L))
    B = jr.normal(k_q, (K, D, D), dtype=dtype)
    Q = B @ jnp.swapaxes(B, -1, -2) / D + 0.3 * jnp.eye(D, dtype=dtype)[None]
    pi = jr.dirichlet(k_pi, jnp.full((K, K), 2.0, dtype) + 3.0 * jnp.eye(K, dtype=dtype), dtype=dtype)
    betas = jr.dirichlet(k_b, jnp.ones((K,), dtype), dtype=dtype)
    return Ab, Q, pi, betas


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
