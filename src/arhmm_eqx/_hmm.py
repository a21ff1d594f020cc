"""One sequence of the HMM: forward filter, backward sampler and smoother (model.md §3).

All functions take the masked emission log-likelihoods `ll` of one sequence, shape
`(Tz, K)`, and the transition matrix `pi`; the initial distribution is uniform. The
filter normalises at every step (the log normaliser is accumulated), so nothing
underflows however long the sequence is; `pi` is floored above zero, so every
predicted probability is positive.
"""

import jax.numpy as jnp
from jax import lax

from ._custom_types import Array, Float, Int


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
