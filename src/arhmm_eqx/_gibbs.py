"""The Gibbs sweep, in the fixed order of model.md: transitions -> AR parameters -> states."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from ._ar import resample_ar_params
from ._custom_types import Array, Bool, Float, Int, PRNGKeyArray
from ._ffbs import sample_stateseqs
from ._model import ARHMM
from ._params import Params
from ._states import States
from ._summaries import median_duration, num_states_used
from ._transitions import resample_hdp_transitions, transition_weights


class GibbsInfo(eqx.Module):
    """Per-sweep diagnostics, all of the model after the sweep.

    - `log_joint_x`, `log_joint_z`: `log p(x | z, Ab, Q)` and `log p(z | pi)`.
    - `num_states_used`: states that label at least one valid frame.
    - `median_duration`: median run length of the states, in frames.
    - `ok`: False when any parameter or likelihood is not finite.
    """

    log_joint_x: Float[Array, ""]
    log_joint_z: Float[Array, ""]
    num_states_used: Int[Array, ""]
    median_duration: Float[Array, ""]
    ok: Bool[Array, ""]


def gibbs_sweep(
    key: PRNGKeyArray,
    model: ARHMM,
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    *,
    states_only: bool = False,
    sequence_chunk: int | None = None,
    parallel: bool = False,
) -> tuple[ARHMM, GibbsInfo]:
    """One sweep. `x` and `mask` must already be checked (`_checks.check_data`).

    `sequence_chunk` bounds the memory of the state step (see `_ffbs.sample_stateseqs`);
    `parallel` uses the parallel-in-time filter and sampler (`_parallel.py`: same draws,
    logarithmic depth, `K` times the memory), meant for accelerators.

    The key is split into three named subkeys whether or not `states_only` is set, so
    switching the parameter steps off does not shift the randomness of the state step.
    """
    hp, p = model.hyperparams, model.params
    K, L = hp.num_states, hp.nlags
    key_trans, key_ar, key_z = jr.split(key, 3)
    z, Ab, Q, pi, betas = model.states.z, p.Ab, p.Q, p.pi, p.betas
    x = x.astype(Ab.dtype)
    mask = mask.astype(Ab.dtype)
    if not states_only:
        betas, pi = resample_hdp_transitions(
            key_trans, z, mask, betas, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K, nlags=L
        )
        Ab, Q = resample_ar_params(
            key_ar, x, mask, z, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0, num_states=K, nlags=L
        )
    z, log_joint_x, log_marginal = sample_stateseqs(
        key_z, x, mask, Ab, Q, pi, sequence_chunk=sequence_chunk, parallel=parallel
    )
    log_pz = jnp.log(pi[z[:, :-1], z[:, 1:]])
    log_joint_z = jnp.sum(jnp.where(transition_weights(mask, L) > 0, log_pz, 0.0))
    ok = (
        jnp.isfinite(log_joint_x) & jnp.isfinite(log_joint_z) & jnp.isfinite(log_marginal)
        & jnp.all(jnp.isfinite(Ab)) & jnp.all(jnp.isfinite(Q))
    )
    new = ARHMM(hp, Params(Ab=Ab, Q=Q, pi=pi, betas=betas), States(z=z))
    valid = mask[:, L:] > 0
    info = GibbsInfo(
        log_joint_x=log_joint_x,
        log_joint_z=log_joint_z,
        num_states_used=num_states_used(z, valid, K),
        median_duration=median_duration(z, valid).astype(Ab.dtype),
        ok=ok,
    )
    return new, info
