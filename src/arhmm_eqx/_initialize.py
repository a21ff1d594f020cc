"""Initialisation from the prior: parameters, then states given the parameters."""

import jax.numpy as jnp
import jax.random as jr

from ._ar import init_ar_params
from ._custom_types import Array, Float, PRNGKeyArray
from ._transitions import init_hdp_transitions


def init_params(
    key: PRNGKeyArray,
    *,
    alpha: Float[Array, ""],
    gamma: Float[Array, ""],
    kappa: Float[Array, ""],
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
    num_states: int,
    dtype=None,
) -> tuple[Float[Array, "K D A"], Float[Array, "K D D"], Float[Array, " K"], Float[Array, "K K"]]:
    """Draw `(Ab, Q)` from the MNIW prior and `(betas, pi)` as in model.md ("Initialisation").

    **Returns:** `(Ab, Q, betas, pi)`.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    key_ar, key_trans = jr.split(key)
    nu_0, S_0, M_0, K_0 = (jnp.asarray(v, dtype) for v in (nu_0, S_0, M_0, K_0))
    Ab, Q = init_ar_params(key_ar, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0, num_states=num_states)
    betas, pi = init_hdp_transitions(
        key_trans, alpha=alpha, kappa=kappa, gamma=gamma, num_states=num_states, dtype=dtype
    )
    return Ab, Q, betas, pi
