"""Log-space HMM inference for the point estimates: a differentiable filter, and EM's forward-backward.

One sequence at a time over its masked emission log-likelihoods `ll` `(Tz, K)` (the
callers vmap over sequences; they hold the `(N, Tz, K)` array). The predicted
probabilities enter in log space, so the filter stays finite for parameters far from
the data, such as the prior draws that EM and gradient fitting often start from; where
both are finite it gives the same `log p(x | Ab, Q, pi)` as the sampler's blocked filter
up to rounding. Everything here is differentiable (reverse mode stores the messages).
"""

import jax
import jax.numpy as jnp
from jax import lax

from .._ar import ar_log_likelihoods
from .._custom_types import Array, Float
from .._linalg import PRECISION


def forward_filter(ll: Float[Array, "Tz K"], pi: Float[Array, "K K"]) -> tuple[Float[Array, ""], Float[Array, "Tz K"]]:
    """One sequence: `(log p(x), filtered p(z[t] | x[:t+1]))`, robust to far-apart states.

    The predicted probabilities enter in log space, `a = log(filt @ pi) + ll[t]`, and the
    exponential is taken after subtracting `max(a)`. (Scaling the likelihoods alone, as
    the sampler's filter does, underflows to `0 / 0` when the state that explains a frame
    by hundreds of nats has a predicted probability near the floor of `pi`, which happens
    with parameters far from the data, e.g. a prior draw.) Differentiable.
    """
    K = pi.shape[0]
    tiny = jnp.finfo(ll.dtype).tiny

    def step(carry, ll_t):
        filt, log_norm = carry
        pred = jnp.matmul(filt, pi, precision=PRECISION)
        a = jnp.log(jnp.maximum(pred, tiny)) + ll_t
        m = jnp.max(a)
        w = jnp.exp(a - m)
        c = jnp.sum(w)
        filt = w / c
        return (filt, log_norm + m + jnp.log(c)), filt

    # The first frame: the uniform initial distribution.
    a0 = ll[0] - jnp.log(jnp.asarray(K, ll.dtype))
    m0 = jnp.max(a0)
    w0 = jnp.exp(a0 - m0)
    filt0 = w0 / jnp.sum(w0)
    init = (filt0, m0 + jnp.log(jnp.sum(w0)))
    (_, log_norm), filtered = lax.scan(step, init, ll[1:])
    return log_norm, jnp.concatenate([filt0[None], filtered], axis=0)


def stable_marginal_log_likelihood(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
) -> Float[Array, ""]:
    """`log p(x | Ab, Q, pi)` summed over sequences, through `forward_filter` (holds `N Tz K` log-likelihoods)."""
    ll = ar_log_likelihoods(x, mask, Ab, Q)
    log_norms, _ = jax.vmap(forward_filter, in_axes=(0, 0 if pi.ndim == 3 else None))(ll, pi)  # (N, K, K): groups
    return jnp.sum(log_norms)


def forward_backward(
    ll: Float[Array, "Tz K"], pi: Float[Array, "K K"], w: Float[Array, " Tm1"]
) -> tuple[Float[Array, ""], Float[Array, "Tz K"], Float[Array, "K K"]]:
    """One sequence: `(log p(x), smoothed marginals gamma, sum_t w_t p(z[t-1], z[t] | x))`.

    With the filtered `f[t]` (`forward_filter`) and a backward message `b[t]`
    proportional to `p(x[t+1:] | z[t])`, the pairwise posterior is
    `f[t-1, i] pi[i, j] h[t, j]` with `h[t] = p(x[t] | z[t]) b[t]` (rescaled), divided by its
    sum `(f[t-1] @ pi) . h[t]`; so the weighted sum over `t` is one product `pi * (f[:-1]^T @ H)`.
    `h` is formed in log space (`exp(ll + log b - max)`), so it cannot underflow to all zeros.
    """
    log_norm, filt = forward_filter(ll, pi)
    K = pi.shape[0]
    tiny = jnp.finfo(ll.dtype).tiny

    def scaled(ll_t, b_t):
        a = ll_t + jnp.log(jnp.maximum(b_t, tiny))
        return jnp.exp(a - jnp.max(a))

    def backward(b_next, ll_next):
        b = jnp.matmul(pi, scaled(ll_next, b_next), precision=PRECISION)
        b = b / jnp.sum(b)
        return b, b

    b_last = jnp.full((K,), 1.0 / K, ll.dtype)
    _, b = lax.scan(backward, b_last, ll[1:], reverse=True)
    b = jnp.concatenate([b, b_last[None]], axis=0)
    gamma = jax.nn.softmax(jnp.log(jnp.maximum(filt, tiny)) + jnp.log(jnp.maximum(b, tiny)), axis=-1)
    h = jax.vmap(scaled)(ll[1:], b[1:])
    pred = jnp.matmul(filt[:-1], pi, precision=PRECISION)
    scale = w / jnp.maximum(jnp.sum(pred * h, axis=-1), tiny)
    xi = pi * jnp.matmul(filt[:-1].T, h * scale[:, None], precision=PRECISION)
    return log_norm, gamma, xi
