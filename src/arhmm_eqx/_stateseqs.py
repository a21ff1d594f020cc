"""State sequences over `(N, T)`: resampling, smoothed marginals and marginal likelihood."""

import jax
import jax.random as jr

from . import _ffbs
from ._custom_types import Array, Float, Int, PRNGKeyArray
from ._hmm import backward_sample, forward_filter, smoother


def sample_stateseqs_from_ll(
    key: PRNGKeyArray, ll: Float[Array, "N Tz K"], pi: Float[Array, "K K"]
) -> tuple[Int[Array, "N Tz"], Float[Array, " N"]]:
    """Forward-filter backward-sample every sequence from its log-likelihoods.

    Returns `z` and the per-sequence log normalisers `log p(x_n | params)`.
    """
    N, Tz, _ = ll.shape
    uniforms = jr.uniform(key, (N, Tz), dtype=ll.dtype)

    def one(ll_n, u_n):
        log_norm, filtered = forward_filter(ll_n, pi)
        return backward_sample(filtered, pi, u_n), log_norm

    return jax.vmap(one)(ll, uniforms)


def resample_discrete_stateseqs(
    key: PRNGKeyArray,
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"],
) -> Int[Array, "N Tz"]:
    """Draw `z ~ p(z | x, Ab, Q, pi)` for every sequence (model.md §3), block by block in time
    (`_ffbs.sample_stateseqs`); the same draw as `sample_stateseqs_from_ll` on the same key, up to
    the rounding of the cumulative sums."""
    z, _, _ = _ffbs.sample_stateseqs(key, x, mask, Ab, Q, pi)
    return z


def stateseq_marginals(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"],
) -> Float[Array, "N Tz K"]:
    """Smoothed `p(z[t] | x)` for every sequence and frame `t >= nlags`, in blocks of time
    (`_ffbs.smoothed_marginals`; `stateseq_marginals_from_ll` is the reference)."""
    return _ffbs.smoothed_marginals(x, mask, Ab, Q, pi)


def stateseq_marginals_from_ll(ll: Float[Array, "N Tz K"], pi: Float[Array, "K K"]) -> Float[Array, "N Tz K"]:
    """Smoothed marginals from precomputed log-likelihoods (one sequence at a time, `_hmm.smoother`)."""
    return jax.vmap(smoother, in_axes=(0, None))(ll, pi)


def marginal_log_likelihood(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"],
) -> Float[Array, ""]:
    """`log p(x | Ab, Q, pi)` summed over sequences, with masked rows (model.md §3)."""
    return _ffbs.marginal_log_likelihood(x, mask, Ab, Q, pi)
