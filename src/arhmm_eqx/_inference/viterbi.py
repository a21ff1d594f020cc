"""Most likely state sequence (Viterbi) per sequence, with the masking of model.md.

The path maximises `p(z | x, Ab, Q, pi)` over every frame `nlags..T-1` jointly, with the
masked emission log-likelihoods of model.md §3 (a masked frame has log-likelihood 0 in
every state, while the Markov chain runs through it) and the uniform initial state. So
the states of masked frames are those of the jointly most likely path: across a masked
gap they bridge the valid frames on either side, and in trailing padding they follow the
most likely transitions. `fill_value` replaces them when only the valid frames matter.
"""

import jax.numpy as jnp
from jax import lax

from .._ar import ar_log_likelihoods
from .._custom_types import Array, Float, Int


def viterbi_from_ll(ll: Float[Array, "N Tz K"], pi: Float[Array, "K K"] | Float[Array, "N K K"]) -> Int[Array, "N Tz"]:
    """The most likely path of every sequence given its masked log-likelihoods `ll` `(N, Tz, K)`.

    Max-product forward pass over all sequences at once, keeping only the scores `(N, Tz, K)`
    (no back-pointers: each step is a max over `(N, K, K)`, without the argmax); then a
    backward pass that recomputes the back-pointer of the path alone, `argmax_i (score_t[i] +
    log pi[i, z_{t+1}])`, from the same numbers the forward max saw, so it is the pointer the
    forward pass would have stored (`O(K)` per frame instead of `O(K^2)`). The scores are
    shifted by their maximum at every step (which changes no argmax) so that they stay of
    order one in float32 however long the sequence is. Ties go to the lowest state index.
    """
    log_pi_T = jnp.swapaxes(jnp.log(pi), -1, -2)  # log_pi_T[j, i] = log pi[i, j]: the max runs over the last axis
    per_sequence = pi.ndim == 3  # (N, K, K): each sequence's own pi (groups)
    rows = jnp.arange(ll.shape[0])

    def forward(score, ll_t):
        lp = log_pi_T if per_sequence else log_pi_T[None]
        best = jnp.max(score[:, None, :] + lp, axis=-1)  # (N, K): best path into j
        new = best + ll_t
        return new - jnp.max(new, axis=-1, keepdims=True), score

    score0 = ll[:, 0] - jnp.max(ll[:, 0], axis=-1, keepdims=True)  # uniform start: a constant shift
    score_last, scores = lax.scan(forward, score0, jnp.swapaxes(ll[:, 1:], 0, 1))  # scores[t]: score_t
    z_last = jnp.argmax(score_last, axis=-1).astype(jnp.int32)

    def backward(z_next, score_t):
        lp = log_pi_T[rows, z_next] if per_sequence else log_pi_T[z_next]
        z_t = jnp.argmax(score_t + lp, axis=-1).astype(jnp.int32)
        return z_t, z_t

    _, z_rest = lax.scan(backward, z_last, scores, reverse=True)  # (Tz - 1, N)
    return jnp.concatenate([jnp.swapaxes(z_rest, 0, 1), z_last[:, None]], axis=1)


def viterbi_paths(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
    *,
    fill_value: int | None = -1,
    nu: Float[Array, " K"] | None = None,
) -> Int[Array, "N Tz"]:
    """The most likely state path of every sequence (`viterbi_from_ll`).

    Memory: the log-likelihoods and the forward scores, `2 N Tz K` numbers.

    **Returns:** `z` of shape `(N, T - nlags)`, int32; masked frames hold `fill_value`
    unless it is `None`, in which case they keep the states of the most likely path.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    ll = ar_log_likelihoods(x, mask, Ab, Q, nu)  # Student-t emissions with `nu` (robust model)
    z = viterbi_from_ll(ll, pi)
    if fill_value is None:
        return z
    return jnp.where(mask[:, nlags:] > 0, z, jnp.asarray(fill_value, jnp.int32))
