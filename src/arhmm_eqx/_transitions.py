"""Sticky HDP transitions: transition counts and the conditionals of `(betas, pi)` (model.md §1)."""

import jax
import jax.numpy as jnp
import jax.random as jr

from ._custom_types import Array, Float, Int, PRNGKeyArray
from ._distributions import sample_dirichlet
from ._table_counts import sample_override_table_counts


def transition_weights(mask: Float[Array, "N T"], nlags: int) -> Float[Array, "N Tzm1"]:
    """Which transitions count (model.md, "Masking"): weight 1 for the transition into state
    frame `t = 1 .. Tz-1` (frame `t + nlags` of `x`) when that frame is valid or is followed
    later in the same sequence by a valid frame, 0 in the trailing padding after the last one.

    States inside an interior or leading gap are part of the chain the state step samples,
    so their transitions count; the states after the last valid frame touch nothing else and
    are left out, which marginalises them exactly.
    """
    valid = mask[:, nlags + 1 :] > 0
    # A reversed running maximum: 1 where this frame or a later one is valid.
    later_valid = jax.lax.cummax(valid.astype(jnp.int32), axis=1, reverse=True) > 0
    return later_valid.astype(jnp.result_type(float))


def count_transitions(
    z: Int[Array, "N Tz"], mask: Float[Array, "N T"], *, num_states: int, nlags: int
) -> Float[Array, "K K"]:
    """Transition counts `n[i, j]` over the transitions that count (`transition_weights`)."""
    K = num_states
    weights = transition_weights(mask, nlags)
    idx = z[:, :-1] * K + z[:, 1:]
    counts = jax.ops.segment_sum(weights.reshape(-1), idx.reshape(-1), num_segments=K * K)
    return counts.reshape(K, K)


def floor_and_normalize(pi: Float[Array, "*batch K K"]) -> Float[Array, "*batch K K"]:
    """Rows renormalised, then every entry floored at the dtype's `tiny` so logs stay finite.

    The floor comes last: dividing a floored `tiny` by a row sum just above 1 would give
    a subnormal, which CPUs flush to zero. Rows then sum to 1 within `K * tiny`.
    """
    pi = pi / pi.sum(axis=-1, keepdims=True)
    return jnp.maximum(pi, jnp.finfo(pi.dtype).tiny)


def sample_betas(
    key: PRNGKeyArray, mbar: Float[Array, "K K"], gamma: Float[Array, ""]
) -> Float[Array, " K"]:
    """`betas ~ Dirichlet(gamma / K + sum_i mbar[i, :])`."""
    K = mbar.shape[0]
    return sample_dirichlet(key, gamma / K + mbar.sum(axis=0))


def sample_pi(
    key: PRNGKeyArray,
    counts: Float[Array, "K K"],
    betas: Float[Array, " K"],
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
) -> Float[Array, "K K"]:
    """`pi[i] ~ Dirichlet(n[i] + alpha * betas + kappa * e_i)`, then floored."""
    K = counts.shape[0]
    conc = counts + alpha * betas[None, :] + kappa * jnp.eye(K, dtype=counts.dtype)
    return floor_and_normalize(sample_dirichlet(key, conc))


def init_hdp_transitions(
    key: PRNGKeyArray,
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    gamma: Float[Array, ""],
    num_states: int,
    dtype=None,
) -> tuple[Float[Array, " K"], Float[Array, "K K"]]:
    """Draw `betas` from its prior, then `pi` from its conditional with zero counts."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    K = num_states
    key_betas, key_pi = jr.split(key)
    alpha, kappa, gamma = (jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    betas = sample_dirichlet(key_betas, jnp.full((K,), gamma / K, dtype))
    pi = sample_pi(key_pi, jnp.zeros((K, K), dtype), betas, alpha, kappa)
    return betas, pi


def resample_hdp_transitions(
    key: PRNGKeyArray,
    z: Int[Array, "N Tz"],
    mask: Float[Array, "N T"],
    betas: Float[Array, " K"],
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    gamma: Float[Array, ""],
    num_states: int,
    nlags: int,
) -> tuple[Float[Array, " K"], Float[Array, "K K"]]:
    """One Gibbs update of `(betas, pi)` given `z` (auxiliary-variable scheme of Fox et al. 2011).

    Table counts `mbar` given the current `betas`, then `betas` given `mbar`, then `pi`
    given the counts and the new `betas`.
    """
    dtype = betas.dtype
    key_tables, key_betas, key_pi = jr.split(key, 3)
    alpha, kappa, gamma = (jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    counts = count_transitions(z, mask, num_states=num_states, nlags=nlags).astype(dtype)
    mbar = sample_override_table_counts(key_tables, counts, betas, alpha, kappa)
    betas = sample_betas(key_betas, mbar, gamma)
    pi = sample_pi(key_pi, counts, betas, alpha, kappa)
    return betas, pi
