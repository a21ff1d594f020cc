"""Parallel-in-time forward filtering / backward sampling (associative scans), for accelerators.

The same distribution as the blocked sequential pass of `blocked.py` (model.md §3),
computed with `lax.associative_scan` so that the depth is `O(log Tz)` instead of `Tz`:

- **Filter.** Frame `t` is the matrix `E_t = pi * exp(ll_t - m_t)[None, :]` (with
  `m_t = max_k ll_t[k]`), and frame 0 the matrix whose rows all equal the unnormalised
  initial filter `(1/K) exp(ll_0 - m_0)`. Row 0 of the prefix product `E_0 ... E_t` is the
  unnormalised filter of frame `t`. Each product is renormalised by its largest entry,
  whose log is carried in a log-scale, so nothing overflows or underflows however long
  the sequence is.
- **Backward sampler.** Given the uniforms, `z_t` is a deterministic function of
  `z_{t+1}`: the map `f_t[j] = draw(filtered[t] * pi[:, j], u_t)` (an inverse-CDF draw by one
  cumulative sum), and the last frame is the constant map `draw(filtered[-1], u_{-1})`.
  `z_t = (f_t o f_{t+1} o ... o f_{Tz-1})[0]` is a reverse associative scan of maps. With
  the same uniforms it gives the same states as the sequential pass, up to the rounding
  of the filtered probabilities.

Cost, per sequence: the filter does `O(Tz K^3)` work (against `O(Tz K^2)` sequentially)
in depth `O(log Tz)`, and both passes hold `Tz x K x K` numbers, `K` times the `Tz x K`
filtered messages of the sequential pass. It is worth it on accelerators, for long
sequences and moderate `K`; on CPUs, or for large `K`, use the blocked pass.

The uniforms and the chunking over sequences are the blocked pass's (the package's
`sample_stateseqs` draws the one and does the other for both), so `parallel=True` changes
only how each chunk is filtered and sampled. The log-likelihoods, the draw and the filter
stay this module's own: the associative scan needs every frame's likelihoods at once, and
sharing the blocked pass's two-level draw would change the states drawn here.
"""

import jax
import jax.numpy as jnp
from jax import lax

from .._ar import ar_log_likelihoods
from .._custom_types import Array, Float, Int
from .._linalg import PRECISION


def _combine_scaled(a, b):
    """Product of two renormalised matrices with log-scales (batched over a leading axis)."""
    mat_a, log_a = a
    mat_b, log_b = b
    mat = jnp.matmul(mat_a, mat_b, precision=PRECISION)
    scale = jnp.max(mat, axis=(-2, -1))
    return mat / scale[..., None, None], log_a + log_b + jnp.log(scale)


def parallel_filter(ll: Float[Array, "Tz K"], pi: Float[Array, "K K"]) -> tuple[Float[Array, ""], Float[Array, "Tz K"]]:
    """Return `log p(x | pi, Ab, Q)` of the sequence and the filtered `p(z[t] | x[:t+1])`.

    The same as a sequential forward filter with a uniform initial distribution, by an associative scan.
    """
    Tz, K = ll.shape
    m = jnp.max(ll, axis=-1)
    lik = jnp.exp(ll - m[:, None])  # (Tz, K), largest entry 1 in every frame
    first = jnp.broadcast_to(lik[0][None, :] / K, (1, K, K))
    mats = jnp.concatenate([first, pi[None] * lik[1:, None, :]], axis=0)  # (Tz, K, K)
    # Materialise the elements: XLA:GPU (jax 0.11) crashed fusing this product into the
    # scan's matrix products (a Triton tiling check failure).
    mats = lax.optimization_barrier(mats)
    prefix, log_scale = lax.associative_scan(_combine_scaled, (mats, jnp.zeros((Tz,), ll.dtype)))
    rows = prefix[:, 0, :]
    totals = jnp.sum(rows, axis=-1)
    filtered = rows / totals[:, None]
    log_norm = log_scale[-1] + jnp.log(totals[-1]) + jnp.sum(m)
    return log_norm, filtered


def _draw_all(p, u):
    """Inverse-CDF draws from the rows of `p` (..., K, K) with one uniform per leading index `u` (...,)."""
    K = p.shape[-1]
    # A cumulative sum (`blocked._draw` multiplies by a triangular matrix of ones; in float64
    # the two agree to the last bit or nearly so).
    cdf = jnp.cumsum(p, axis=-1)
    idx = jnp.sum(cdf < u[..., None, None] * cdf[..., -1:], axis=-1)
    return jnp.minimum(idx, K - 1).astype(jnp.int32)


def _compose_maps(later, current):
    # `lax.associative_scan(..., reverse=True)` calls `fn(composition of the later maps, map t)`;
    # map t applies after them: `(f_t o g)[j] = f_t[g[j]]`.
    return jnp.take_along_axis(current, later, axis=-1)


def parallel_backward_sample(
    filtered: Float[Array, "Tz K"], pi: Float[Array, "K K"], uniforms: Float[Array, " Tz"]
) -> Int[Array, " Tz"]:
    """Draw `z` from `p(z | x)` given the filtered messages and one uniform per frame, by a reverse scan of maps.

    `z[-1] = draw(filtered[-1], u[-1])`, then `z[t] = draw(filtered[t] * pi[:, z[t+1]], u[t])`.
    """
    Tz, K = filtered.shape
    # maps[t, j] = z_t given z_{t+1} = j: rows of `pi.T * filtered[t]` are `filtered[t] * pi[:, j]`.
    maps = _draw_all(pi.T[None] * filtered[:-1, None, :], uniforms[:-1])  # (Tz - 1, K)
    last = _draw_all(filtered[-1][None, :], uniforms[-1])  # (1,)
    maps = jnp.concatenate([maps, jnp.broadcast_to(last, (1, K))], axis=0)
    composed = lax.associative_scan(_compose_maps, maps, reverse=True)
    return composed[:, 0]


def sample_given_uniforms(
    uniforms: Float[Array, "N Tz"],
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
    nu: Float[Array, " K"] | None = None,
) -> tuple[Int[Array, "N Tz"], Float[Array, ""], Float[Array, ""]]:
    """Filter and sample every sequence with the given uniforms, as `blocked.sample_given_uniforms` does.

    The same states as the blocked pass for the same uniforms, up to rounding. Memory:
    `N x Tz x K x K` numbers (see the module docstring).

    **Returns:** `(z, log_joint_x, log_marginal)`: the states; `log p(x | z, Ab, Q)` of the
    sampled states over valid frames; and `log p(x | Ab, Q, pi)` summed over sequences.
    """
    ll = ar_log_likelihoods(x, mask, Ab, Q, nu)  # (N, Tz, K), 0 on masked frames
    pi_axis = 0 if pi.ndim == 3 else None  # (N, K, K): each sequence's own pi (groups)
    log_norms, filtered = jax.vmap(parallel_filter, in_axes=(0, pi_axis))(ll, pi)
    z = jax.vmap(parallel_backward_sample, in_axes=(0, pi_axis, 0))(filtered, pi, uniforms)
    log_joint_x = jnp.sum(jnp.take_along_axis(ll, z[..., None], axis=-1))
    return z, log_joint_x, jnp.sum(log_norms)
