"""Per-group sticky HDP transitions (model.md, "Groups"): counts, table counts and `(betas, pi)`.

Every sequence `n` has a group `groups[n]` in `0 .. G-1`; group `g` has its own transition
matrix with rows `pi[g, i] ~ Dirichlet(alpha * betas + kappa * e_i)` around one shared
`betas ~ Dirichlet(gamma / K)`. Given the states, the groups' transition counts `n[g]` are
independent given `betas`, so the Gibbs update of `(betas, pi)` is the one of `_transitions`
with the table counts drawn per group (each group's counts against the shared `betas`) and
summed over groups before `betas` is drawn:

    mbar[g, i, j] | n[g], betas      (exact CRT draws with the override thinning)
    betas | mbar ~ Dirichlet(gamma / K + sum_{g, i} mbar[g, i, :])
    pi[g, i] | n[g], betas ~ Dirichlet(n[g, i] + alpha * betas + kappa * e_i)

`resample_separate_hdp_transitions` is the other grouped model, the one of the reference's
`separate_trans`: each group an independent sticky HDP with its own `betas[g]`.
"""

import jax
import jax.numpy as jnp
import jax.random as jr

from ._custom_types import Array, Float, Int, PRNGKeyArray
from ._distributions import sample_dirichlet
from ._table_counts import sample_cells
from ._transitions import floor_and_normalize, transition_weights


def count_group_transitions(
    z: Int[Array, "N Tz"],
    mask: Float[Array, "N T"],
    groups: Int[Array, " N"],
    *,
    num_states: int,
    num_groups: int,
    nlags: int,
) -> Float[Array, "G K K"]:
    """Transition counts `n[g, i, j]` of each group over the transitions that count
    (`transition_weights`). Labels outside `0 .. G-1` count nowhere."""
    K, G = num_states, num_groups
    weights = transition_weights(mask, nlags)
    idx = groups[:, None] * (K * K) + z[:, :-1] * K + z[:, 1:]
    counts = jax.ops.segment_sum(weights.reshape(-1), idx.reshape(-1), num_segments=G * K * K)
    return counts.reshape(G, K, K)


def sample_group_table_counts(
    key: PRNGKeyArray,
    counts: Float[Array, "G K K"],
    betas: Float[Array, "*batch K"],
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
) -> Float[Array, "G K K"]:
    """Table counts `mbar[g]` of every group given its counts and `betas` (shared `(K,)`, or
    one per group `(G, K)`), exactly, in one loop over all `G K^2` cells."""
    G, K, _ = counts.shape
    dtype = counts.dtype
    b = betas if betas.ndim == 2 else jnp.broadcast_to(betas, (G, K))
    a = jnp.broadcast_to((alpha * b)[:, None, :], (G, K, K)).astype(dtype)
    s = jnp.broadcast_to(kappa * jnp.eye(K, dtype=dtype), (G, K, K)).astype(dtype)
    flat = sample_cells(key, counts.reshape(-1), a.reshape(-1), s.reshape(-1))
    return flat.reshape(G, K, K)


def sample_shared_betas(key: PRNGKeyArray, mbar: Float[Array, "G K K"], gamma: Float[Array, ""]) -> Float[Array, " K"]:
    """`betas ~ Dirichlet(gamma / K + sum_{g, i} mbar[g, i, :])`: the table counts pool over groups."""
    K = mbar.shape[-1]
    return sample_dirichlet(key, gamma / K + mbar.sum(axis=(0, 1)))


def sample_group_pi(
    key: PRNGKeyArray,
    counts: Float[Array, "G K K"],
    betas: Float[Array, "*batch K"],
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
) -> Float[Array, "G K K"]:
    """`pi[g, i] ~ Dirichlet(n[g, i] + alpha * betas + kappa * e_i)` for every group, then floored
    (`betas` shared `(K,)` or one per group `(G, K)`)."""
    K = counts.shape[-1]
    b = betas[None, None, :] if betas.ndim == 1 else betas[:, None, :]
    conc = counts + alpha * b + kappa * jnp.eye(K, dtype=counts.dtype)[None]
    return floor_and_normalize(sample_dirichlet(key, conc))


def init_group_transitions(
    key: PRNGKeyArray,
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    gamma: Float[Array, ""],
    num_states: int,
    num_groups: int,
    dtype=None,
) -> tuple[Float[Array, " K"], Float[Array, "G K K"]]:
    """`betas` from its prior, then every group's `pi[g]` from its conditional with zero counts."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    K, G = num_states, num_groups
    key_betas, key_pi = jr.split(key)
    alpha, kappa, gamma = (jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    betas = sample_dirichlet(key_betas, jnp.full((K,), gamma / K, dtype))
    pi = sample_group_pi(key_pi, jnp.zeros((G, K, K), dtype), betas, alpha, kappa)
    return betas, pi


def resample_group_transitions(
    key: PRNGKeyArray,
    z: Int[Array, "N Tz"],
    mask: Float[Array, "N T"],
    groups: Int[Array, " N"],
    betas: Float[Array, " K"],
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    gamma: Float[Array, ""],
    num_states: int,
    num_groups: int,
    nlags: int,
) -> tuple[Float[Array, " K"], Float[Array, "G K K"]]:
    """One Gibbs update of `(betas, pi)` given `z` with one `pi[g]` per group and shared `betas`.

    The keys are split as in `resample_hdp_transitions`; table counts per group given the
    current `betas`, `betas` given their sum over groups, then each `pi[g]` given its own
    counts and the new `betas`.
    """
    dtype = betas.dtype
    key_tables, key_betas, key_pi = jr.split(key, 3)
    alpha, kappa, gamma = (jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    counts = count_group_transitions(
        z, mask, groups, num_states=num_states, num_groups=num_groups, nlags=nlags
    ).astype(dtype)
    mbar = sample_group_table_counts(key_tables, counts, betas, alpha, kappa)
    betas = sample_shared_betas(key_betas, mbar, gamma)
    pi = sample_group_pi(key_pi, counts, betas, alpha, kappa)
    return betas, pi


def resample_separate_hdp_transitions(
    key: PRNGKeyArray,
    z: Int[Array, "N Tz"],
    mask: Float[Array, "N T"],
    groups: Int[Array, " N"],
    betas: Float[Array, "G K"],
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    gamma: Float[Array, ""],
    num_states: int,
    num_groups: int,
    nlags: int,
) -> tuple[Float[Array, "G K"], Float[Array, "G K K"]]:
    """One Gibbs update of independent sticky HDPs, one per group: `betas[g]` from group `g`'s
    table counts alone, then `pi[g]` given its counts and `betas[g]` (the reference's
    `separate_trans` model)."""
    dtype = betas.dtype
    key_tables, key_betas, key_pi = jr.split(key, 3)
    alpha, kappa, gamma = (jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    counts = count_group_transitions(
        z, mask, groups, num_states=num_states, num_groups=num_groups, nlags=nlags
    ).astype(dtype)
    mbar = sample_group_table_counts(key_tables, counts, betas, alpha, kappa)
    betas = sample_dirichlet(key_betas, gamma / num_states + mbar.sum(axis=1))
    return betas, sample_group_pi(key_pi, counts, betas, alpha, kappa)


def init_separate_hdp_transitions(
    key: PRNGKeyArray,
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    gamma: Float[Array, ""],
    num_states: int,
    num_groups: int,
    dtype=None,
) -> tuple[Float[Array, "G K"], Float[Array, "G K K"]]:
    """Every group's `betas[g]` from the prior, then `pi[g]` given it with zero counts."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    K, G = num_states, num_groups
    key_betas, key_pi = jr.split(key)
    alpha, kappa, gamma = (jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    betas = sample_dirichlet(key_betas, jnp.full((G, K), gamma / K, dtype))
    return betas, sample_group_pi(key_pi, jnp.zeros((G, K, K), dtype), betas, alpha, kappa)


def sequence_pi(pi: Float[Array, "*G K K"], groups: Int[Array, " N"] | None) -> Float[Array, "*N K K"]:
    """The transition matrix the inference uses: `pi` itself without groups, the one matrix
    `pi[0]` `(K, K)` when there is one group, else each sequence's own `pi[groups[n]]`
    `(N, K, K)`."""
    if groups is None or pi.ndim == 2:
        return pi
    return pi[0] if pi.shape[0] == 1 else pi[groups]
