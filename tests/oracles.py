"""Test oracles: plain HMM passes over precomputed log-likelihoods, for the package's inference to match.

`forward_filter`, `backward_sample` and `smoother` take the masked emission
log-likelihoods `ll` of one sequence, shape `(Tz, K)`, and the transition matrix `pi`;
the initial distribution is uniform. The filter normalises at every step (the log
normaliser is accumulated), so nothing underflows however long the sequence is; `pi` is
floored above zero, so every predicted probability is positive. The `*_from_ll`
functions vmap them over sequences; `marginal_log_likelihood_parallel` is the parallel
filter over `(N, T)`; `sample_crt` is the table count of one restaurant.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax

from arhmm_eqx._ar import ar_log_likelihoods
from arhmm_eqx._custom_types import Array, Float, Int, PRNGKeyArray
from arhmm_eqx._inference.parallel import parallel_filter
from arhmm_eqx._table_counts import sample_cells


def forward_filter(
    ll: Float[Array, "Tz K"], pi: Float[Array, "K K"]
) -> tuple[Float[Array, ""], Float[Array, "Tz K"]]:
    """Return `log p(x | pi, Ab, Q)` of the sequence and the filtered `p(z[t] | x[:t+1])`."""
    K = pi.shape[0]

    def step(carry, ll_t):
        pred, log_norm = carry
        m = jnp.max(ll_t)
        w = pred * jnp.exp(ll_t - m)
        c = jnp.sum(w)
        filt = w / c
        return (filt @ pi, log_norm + jnp.log(c) + m), filt

    init = (jnp.full((K,), 1.0 / K, ll.dtype), jnp.zeros((), ll.dtype))
    (_, log_norm), filtered = lax.scan(step, init, ll)
    return log_norm, filtered


def _categorical_from_uniform(p: Float[Array, " K"], u: Float[Array, ""]) -> Int[Array, ""]:
    """Inverse-CDF draw from unnormalised probabilities `p` with one uniform `u`."""
    cdf = jnp.cumsum(p)
    idx = jnp.sum(cdf < u * cdf[-1])
    return jnp.minimum(idx, p.shape[0] - 1).astype(jnp.int32)


def backward_sample(
    filtered: Float[Array, "Tz K"], pi: Float[Array, "K K"], uniforms: Float[Array, " Tz"]
) -> Int[Array, " Tz"]:
    """Draw `z` from `p(z | x)`: `z[-1] ~ filtered[-1]`, then `z[t] ~ filtered[t] * pi[:, z[t+1]]`."""
    z_last = _categorical_from_uniform(filtered[-1], uniforms[-1])

    def step(z_next, inputs):
        filt_t, u_t = inputs
        z_t = _categorical_from_uniform(filt_t * pi[:, z_next], u_t)
        return z_t, z_t

    _, z_rest = lax.scan(step, z_last, (filtered[:-1], uniforms[:-1]), reverse=True)
    return jnp.concatenate([z_rest, z_last[None]])


def smoother(ll: Float[Array, "Tz K"], pi: Float[Array, "K K"]) -> Float[Array, "Tz K"]:
    """Smoothed marginals `p(z[t] | x)` by a normalised backward pass over the filter."""
    _, filtered = forward_filter(ll, pi)
    K = pi.shape[0]

    def step(beta_next, ll_next):
        m = jnp.max(ll_next)
        beta = pi @ (jnp.exp(ll_next - m) * beta_next)
        beta = beta / jnp.sum(beta)
        return beta, beta

    beta_last = jnp.ones((K,), ll.dtype)
    _, betas = lax.scan(step, beta_last, ll[1:], reverse=True)
    betas = jnp.concatenate([betas, beta_last[None]], axis=0)
    post = filtered * betas
    return post / jnp.sum(post, axis=-1, keepdims=True)


def sample_stateseqs_from_ll(
    key: PRNGKeyArray, ll: Float[Array, "N Tz K"], pi: Float[Array, "K K"]
) -> tuple[Int[Array, "N Tz"], Float[Array, " N"]]:
    """Forward-filter backward-sample every sequence from its log-likelihoods.

    Returns `z` and the per-sequence log normalisers `log p(x_n | params)`. The same uniforms
    as the package's `sample_stateseqs` on the same key, so the same states up to the
    rounding of the cumulative sums.
    """
    N, Tz, _ = ll.shape
    uniforms = jr.uniform(key, (N, Tz), dtype=ll.dtype)

    def one(ll_n, u_n):
        log_norm, filtered = forward_filter(ll_n, pi)
        return backward_sample(filtered, pi, u_n), log_norm

    return jax.vmap(one)(ll, uniforms)


def stateseq_marginals_from_ll(ll: Float[Array, "N Tz K"], pi: Float[Array, "K K"]) -> Float[Array, "N Tz K"]:
    """Smoothed marginals from precomputed log-likelihoods (one sequence at a time, `smoother`)."""
    return jax.vmap(smoother, in_axes=(0, None))(ll, pi)


def marginal_log_likelihood_parallel(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"],
) -> Float[Array, ""]:
    """`log p(x | Ab, Q, pi)` summed over sequences, by the parallel filter."""
    ll = ar_log_likelihoods(x, mask, Ab, Q)
    log_norms, _ = jax.vmap(parallel_filter, in_axes=(0, None))(ll, pi)
    return jnp.sum(log_norms)


def sample_crt(key: PRNGKeyArray, n, concentration, stickiness=0.0):
    """Table count of one restaurant: `sum_{k<n} Bernoulli(c / (c + s + k))` (scalar inputs)."""
    dtype = jnp.result_type(float)
    args = (jnp.asarray(v, dtype).reshape(1) for v in (n, concentration, stickiness))
    return sample_cells(key, *args)[0]
