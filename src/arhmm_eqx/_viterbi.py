"""Most likely state sequence (Viterbi) per sequence, with the masking of model.md.

The path maximises `p(z | x, Ab, Q, pi)` over every frame `nlags..T-1` jointly, with the
masked emission log-likelihoods of model.md §3 (a masked frame has log-likelihood 0 in
every state, while the Markov chain runs through it) and the uniform initial state. So
the states of masked frames are those of the jointly most likely path: across a masked
gap they bridge the valid frames on either side, and in trailing padding they follow the
most likely transitions. `fill_value` replaces them when only the valid frames matter.
"""

import jax
import jax.numpy as jnp
from jax import lax

from ._ar import ar_log_likelihoods
from ._custom_types import Array, Float, Int


def viterbi_path_from_ll(ll: Float[Array, "Tz K"], pi: Float[Array, "K K"]) -> Int[Array, " Tz"]:
    """The most likely path of one sequence given its masked log-likelihoods `ll` `(Tz, K)`.

    Max-product forward pass storing back-pointers `(Tz, K)`, then a backward pass that
    follows them. The scores are shifted by their maximum at every step (which changes no
    argmax) so that they stay of order one in float32 however long the sequence is. Ties
    go to the lowest state index.
    """
    Tz, K = ll.shape
    log_pi = jnp.log(pi)

    def forward(score, ll_t):
        cand = score[:, None] + log_pi  # cand[i, j]: best path ending in i, then i -> j
        back = jnp.argmax(cand, axis=0).astype(jnp.int32)
        score = jnp.max(cand, axis=0) + ll_t
        return score - jnp.max(score), back

    score0 = ll[0] - jnp.max(ll[0])  # the uniform initial log-probability is a constant shift
    score_last, backs = lax.scan(forward, score0, ll[1:])
    z_last = jnp.argmax(score_last).astype(jnp.int32)

    def backward(z_next, back_t):
        z_t = back_t[z_next]
        return z_t, z_t

    _, z_rest = lax.scan(backward, z_last, backs, reverse=True)
    return jnp.concatenate([z_rest, z_last[None]])


def viterbi_paths(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"],
    *,
    fill_value: int | None = -1,
) -> Int[Array, "N Tz"]:
    """The most likely state path of every sequence (a `vmap` of `viterbi_path_from_ll`).

    Memory: the log-likelihoods and the back-pointers, `2 N Tz K` numbers.

    **Returns:** `z` of shape `(N, T - nlags)`, int32; masked frames hold `fill_value`
    unless it is `None`, in which case they keep the states of the most likely path.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    ll = ar_log_likelihoods(x, mask, Ab, Q)
    z = jax.vmap(viterbi_path_from_ll, in_axes=(0, None))(ll, pi)
    if fill_value is None:
        return z
    return jnp.where(mask[:, nlags:] > 0, z, jnp.asarray(fill_value, jnp.int32))
