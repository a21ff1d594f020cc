"""Compatible with `jax_moseq.models.arhmm.initialize`."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from .._ar import init_ar_params as _init_ar_params
from .._checks import check_data
from .._initialize import init_params as _init_params
from .._stateseqs import resample_discrete_stateseqs
from ._convert import canonicalize_key, hyperparams_from_dict


def init_ar_params(seed, *, num_states, nu_0, S_0, M_0, K_0, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_ar_params`.

    Draw `(Ab, Q)` for each of `num_states` states from `MNIW(nu_0, S_0, M_0, K_0)`.

    **Returns:** `(Ab, Q)` of shapes `(num_states, latent_dim, ar_dim)` and `(num_states, latent_dim, latent_dim)`.
    """
    S_0 = jnp.asarray(S_0)
    dtype = S_0.dtype if jnp.issubdtype(S_0.dtype, jnp.floating) else jnp.result_type(float)
    nu_0, S_0, M_0, K_0 = (jnp.asarray(v, dtype) for v in (nu_0, S_0, M_0, K_0))
    return _init_ar_params(canonicalize_key(seed), nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0, num_states=num_states)


def init_states(seed, x, mask, params, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_states`.

    Draw `z` from its conditional given `x` and `params`. **Returns:** `{"z": z}`.
    """
    nlags = (params["Ab"].shape[2] - 1) // params["Ab"].shape[1]
    x, mask = check_data(x, mask, nlags=nlags, latent_dim=params["Ab"].shape[1])
    Ab = jnp.asarray(params["Ab"])
    x, mask = x.astype(Ab.dtype), mask.astype(Ab.dtype)
    z = _init_states_jit(canonicalize_key(seed), x, mask, Ab, params["Q"], params["pi"])
    return {"z": z}


def init_params(seed, trans_hypparams, ar_hypparams, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_params`.

    **Returns:** `{"Ab", "Q", "betas", "pi"}` drawn from the prior (model.md, "Initialisation").
    """
    hp = hyperparams_from_dict({"trans_hypparams": trans_hypparams, "ar_hypparams": ar_hypparams})
    Ab, Q, betas, pi = _init_params_jit(
        canonicalize_key(seed), alpha=hp.alpha, gamma=hp.gamma, kappa=hp.kappa, nu_0=hp.nu_0, S_0=hp.S_0,
        M_0=hp.M_0, K_0=hp.K_0, num_states=hp.num_states,
    )
    return {"Ab": Ab, "Q": Q, "betas": betas, "pi": pi}


def init_hyperparams(trans_hypparams, ar_hypparams, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_hyperparams`.

    Adds `S_0`, `K_0`, `M_0`, `nu_0` and `num_states` to (a copy of) `ar_hypparams`,
    keeping every key given. **Returns:** `{"trans_hypparams": ..., "ar_hypparams": ...}`.
    """
    hp = hyperparams_from_dict({"trans_hypparams": trans_hypparams, "ar_hypparams": ar_hypparams})
    ar = dict(ar_hypparams)
    ar.update(S_0=hp.S_0, K_0=hp.K_0, M_0=hp.M_0, nu_0=hp.nu_0, num_states=hp.num_states)
    return {"trans_hypparams": dict(trans_hypparams), "ar_hypparams": ar}


def init_model(
    data=None,
    states=None,
    params=None,
    hypparams=None,
    seed=jr.PRNGKey(0),
    trans_hypparams=None,
    ar_hypparams=None,
    verbose=False,
    **kwargs,
):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_model`.

    **Returns:** `{"seed", "states", "params", "hypparams"}`.

    !!! info
        Parameters and states are drawn from independent subkeys of `seed` (the
        reference reuses one key); the result is equal in distribution, not bit for bit.
    """
    seed = canonicalize_key(seed)
    key_params, key_states = jr.split(seed)
    if hypparams is None:
        if trans_hypparams is None or ar_hypparams is None:
            raise ValueError(
                "Pass either `hypparams` or both `trans_hypparams` and `ar_hypparams` to init_model."
            )
        hypparams = init_hyperparams(trans_hypparams, ar_hypparams)
    if states is None:
        if data is None:
            raise ValueError("init_model needs `data` (with `x` and `mask`) when `states` are not given.")
        hp = hyperparams_from_dict(hypparams)
        check_data(data["x"], data["mask"], nlags=hp.nlags, latent_dim=hp.latent_dim)  # before any drawing
    if params is None:
        if verbose:
            print("ARHMM: Initializing parameters")
        params = init_params(key_params, **hypparams)
    if states is None:
        if verbose:
            print("ARHMM: Initializing states")
        states = init_states(key_states, data["x"], data["mask"], params)
    return {"seed": seed, "states": states, "params": params, "hypparams": hypparams}


_init_params_jit = eqx.filter_jit(_init_params)
_init_states_jit = eqx.filter_jit(resample_discrete_stateseqs)
