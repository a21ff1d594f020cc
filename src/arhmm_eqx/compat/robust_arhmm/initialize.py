"""Compatible with `jax_moseq.models.robust_arhmm.initialize`."""

import jax.numpy as _jnp
import jax.random as _jr

from .. import _convert
from ..initialize import (
    init_ar_params as init_ar_params,
    init_hyperparams as init_hyperparams,
    init_params as _init_gaussian_params,
)
from .gibbs import (
    NU_MH_STEPS,
    resample_discrete_stateseqs as resample_discrete_stateseqs,
    resample_nu as _resample_nu,
    resample_tau as resample_tau,
)


DEFAULT_NU = 4.0


def init_nu(seed, num_states, nu_init=DEFAULT_NU, nu_init_steps=NU_MH_STEPS):
    """Compatible with `jax_moseq.models.robust_arhmm.initialize.init_nu`: every state starts at
    `nu_init` and takes `nu_init_steps` Metropolis-Hastings steps on the prior of `nu` alone (no
    frames), as the reference does (its prior `Gamma(1, rate 1)`; the walk is on `log nu` here).

    **Returns:** `nu` `(num_states,)`.
    """
    nu = _jnp.broadcast_to(_jnp.asarray(nu_init, dtype=float), (int(num_states),))
    if int(nu_init_steps) == 0:
        return nu
    empty = _jnp.zeros((1, 1), _jnp.int32)
    return _resample_nu(seed, _jnp.zeros((1, 2)), empty, _jnp.ones((1, 1)), nu, int(num_states), 1,
                        nu_mh_steps=int(nu_init_steps))


def init_params(seed, trans_hypparams, ar_hypparams, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.initialize.init_params`: `Ab, Q, betas, pi` as the
    Gaussian model's, and `nu` from `init_nu`."""
    params = dict(_init_gaussian_params(seed, trans_hypparams, ar_hypparams))
    seed = _convert.canonicalize_key(seed)
    params["nu"] = init_nu(_jr.fold_in(seed, 1), ar_hypparams["num_states"] if "num_states" in ar_hypparams
                           else trans_hypparams["num_states"], ar_hypparams.get("nu_init", DEFAULT_NU),
                           ar_hypparams.get("nu_init_steps", NU_MH_STEPS))
    return params


def init_states(seed, x, mask, params, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.initialize.init_states`: `z` given the Student-t
    emissions, then `tau` given `z`. **Returns:** `{"z", "tau"}`."""
    seed = _convert.canonicalize_key(seed)
    key_z, key_tau = _jr.split(seed)
    p = params
    z = resample_discrete_stateseqs(key_z, x, mask, p["Ab"], p["Q"], p["nu"], p["pi"])
    return {"z": z, "tau": resample_tau(key_tau, x, mask, z, p["Ab"], p["Q"], p["nu"])}


def init_robust_hyperparams(trans_hypparams, ar_hypparams, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.initialize.init_robust_hyperparams`: the Gaussian
    `init_hyperparams` plus `nu_init` (from `nu_init` or `nu`, default 4) and `nu_init_steps`."""
    nu_init = ar_hypparams.get("nu_init", ar_hypparams.get("nu", DEFAULT_NU))
    nu_init_steps = ar_hypparams.get("nu_init_steps", NU_MH_STEPS)
    hypparams = init_hyperparams(trans_hypparams, ar_hypparams)
    hypparams["ar_hypparams"]["nu_init"] = nu_init
    hypparams["ar_hypparams"]["nu_init_steps"] = nu_init_steps
    return hypparams


def init_model(data=None, states=None, params=None, hypparams=None, seed=_jr.PRNGKey(0), trans_hypparams=None,
               ar_hypparams=None, verbose=False, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.initialize.init_model`.

    **Returns:** `{"seed", "hypparams", "params", "states"}`; `params` has `nu`, `states` has `tau`.
    """
    if not (data or states):
        raise ValueError("Must provide either `data` or `states`.")
    if not (hypparams or (trans_hypparams and ar_hypparams)):
        raise ValueError("Must provide either `hypparams` or both `trans_hypparams` and `ar_hypparams`.")
    seed = _convert.canonicalize_key(seed)
    if hypparams is None:
        if verbose:
            print("Robust ARHMM: Initializing hyperparameters")
        hypparams = init_robust_hyperparams(trans_hypparams, ar_hypparams)
    else:
        hypparams = _convert.hypparams_as_scalars(hypparams)
    if params is None:
        if verbose:
            print("Robust ARHMM: Initializing parameters")
        params = init_params(seed, **hypparams)
    if states is None:
        if verbose:
            print("Robust ARHMM: Initializing states")
        states = init_states(seed, data["x"], data["mask"], params)
    return {"seed": seed, "hypparams": hypparams, "params": params, "states": states}
