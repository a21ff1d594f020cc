"""Log probabilities of state sequences and trajectories, with the masking rules of model.md."""

import math

import jax
import jax.numpy as jnp

from ._ar import ar_log_likelihoods
from ._custom_types import Array, Float, Int
from ._lags import get_lags, pad_affine
from ._linalg import psd_cholesky, solve_lower
from ._robust import student_t_log_density
from ._transitions import transition_weights


def discrete_stateseq_log_prob(
    z: Int[Array, "*batch Tz"], pi: Float[Array, "K K"] | Float[Array, "N K K"]
) -> Float[Array, "*batch Tz-1"]:
    """`log pi[z[t-1], z[t]]` for every transition (with `pi` `(N, K, K)` and `z` `(N, Tz)`,
    each sequence's own `pi[n]`)."""
    if pi.ndim == 3:
        return jnp.log(pi[jnp.arange(z.shape[0])[:, None], z[..., :-1], z[..., 1:]])
    return jnp.log(pi[z[..., :-1], z[..., 1:]])


def continuous_stateseq_log_prob(
    x: Float[Array, "*batch T D"],
    z: Int[Array, "*batch Tz"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    nu: Float[Array, " K"] | None = None,
) -> Float[Array, "*batch Tz"]:
    """`log Normal(x[t] | Ab[z[t]] u_t, Q[z[t]])` for every frame `t >= nlags` (unmasked); with
    `nu`, `log StudentT(x[t] | nu[z[t]], Ab[z[t]] u_t, Q[z[t]])` (`tau` integrated out)."""
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    u = pad_affine(get_lags(x, nlags))
    y = x[..., nlags:, :]
    L = psd_cholesky(Q)
    resid = y - jnp.einsum("...ij,...j->...i", Ab[z], u)
    white = solve_lower(L[z].reshape(-1, D, D), resid.reshape(-1, D, 1))[..., 0]
    white = white.reshape(resid.shape)
    log_det = jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)).sum(-1)[z]
    if nu is not None:
        log_norm = -log_det - 0.5 * D * math.log(2 * math.pi)
        return student_t_log_density(jnp.sum(white**2, axis=-1), log_norm, nu[z], D)
    return -0.5 * jnp.sum(white**2, axis=-1) - log_det - 0.5 * D * math.log(2 * math.pi)


def log_joint_likelihood(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    z: Int[Array, "N Tz"],
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    nu: Float[Array, " K"] | None = None,
) -> dict[str, Float[Array, ""]]:
    """`{"z": sum(log_pz * w), "x": sum(log_px * mask[..., L:])}`, with `w` the transitions
    that count (`transition_weights`: into a valid frame, or into a masked frame followed later
    in its sequence by a valid one; model.md, "Masking").

    Masked terms are dropped with `where` (equal to multiplying by the mask for finite
    values), so a NaN in a masked frame cannot leak into the sums.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    log_pz = discrete_stateseq_log_prob(z, pi)
    log_px = continuous_stateseq_log_prob(x, z, Ab, Q, nu)
    valid_z = transition_weights(mask, nlags) > 0
    valid_x = mask[..., nlags:] > 0
    return {
        "z": jnp.sum(jnp.where(valid_z, log_pz, 0.0)),
        "x": jnp.sum(jnp.where(valid_x, log_px, 0.0)),
    }


def count_runs(z: Int[Array, "N Tz"], valid: Array, num_states: int) -> Float[Array, " K"]:
    """Number of occurrences (runs) of each state among valid frames.

    A run starts at a valid frame whose predecessor is absent, masked, or in another
    state; a masked gap therefore ends a run.
    """
    prev_valid = jnp.concatenate([jnp.zeros_like(valid[:, :1]), valid[:, :-1]], axis=1)
    changed = jnp.concatenate([jnp.ones_like(z[:, :1], bool), z[:, 1:] != z[:, :-1]], axis=1)
    starts = changed | ~prev_valid
    w = (starts & valid).astype(jnp.result_type(float))
    return jax.ops.segment_sum(w.reshape(-1), z.reshape(-1), num_segments=num_states)


def state_cross_likelihoods(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    z: Int[Array, "N Tz"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    *,
    epsilon: float = 1e-6,
    nu: Float[Array, " K"] | None = None,
) -> Float[Array, "K K"]:
    """`C[j, k]`: log-likelihood under state `k`'s dynamics of the frames assigned to `j`,
    minus that under `j`'s own, divided by the number of runs of `j` (plus `epsilon`).

    Runs are counted per sequence (`count_runs`): the first run of every sequence counts,
    and a masked gap ends a run. `compat.log_prob.state_cross_likelihoods` follows the
    reference instead, which lays the valid frames of all sequences end to end and counts
    the changepoints of that one series (its first run is not counted, and a run goes on
    across sequence ends and gaps), so the two differ in the normaliser.

    See Wiltschko et al. 2015, supplement p. 33.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    ll = ar_log_likelihoods(x, mask, Ab, Q, nu)  # (N, Tz, K), masked rows are zero
    summed = jax.ops.segment_sum(ll.reshape(-1, K), z.reshape(-1), num_segments=K)  # (K_j, K_k)
    own = jnp.diagonal(summed)
    runs = count_runs(z, mask[:, nlags:] > 0, K).astype(summed.dtype)
    return (summed - own[:, None]) / (runs[:, None] + epsilon)
