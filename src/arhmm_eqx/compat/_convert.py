"""Conversion between the reference dict model and `ARHMM`, and key handling at the compat boundary."""

import jax.numpy as jnp
import jax.random as jr

from .._hyperparams import Hyperparams
from .._model import ARHMM
from .._params import Params
from .._states import States


def canonicalize_key(seed):
    """Accept an `int` (as the reference does) or a JAX key (typed or raw `uint32[2]`)."""
    if isinstance(seed, int):
        return jr.PRNGKey(seed)
    if seed is None:
        raise ValueError("`seed` must be an int or a JAX random key; got None.")
    return seed


def split_seed(seed):
    """Split a key; return `(fresh key to hand back, key to use now)`, both of the input's kind."""
    seed = canonicalize_key(seed)
    new_seed, use = jr.split(seed)
    return new_seed, use


def hyperparams_from_dict(hypparams: dict) -> Hyperparams:
    """`Hyperparams` from the reference's `{"trans_hypparams": ..., "ar_hypparams": ...}`."""
    for group in ("trans_hypparams", "ar_hypparams"):
        if group not in hypparams:
            raise ValueError(f"`hypparams` must contain `{group}`; it has keys {sorted(hypparams)}.")
    return Hyperparams.from_moseq_dicts(hypparams["trans_hypparams"], hypparams["ar_hypparams"])


def find_x(data: dict, states: dict, kwargs: dict | None = None):
    """The trajectory `x`: in `data` for an AR-HMM, in `states` for models built on it (an SLDS)."""
    for source in (states, data, kwargs or {}):
        if source is not None and "x" in source:
            return source["x"]
    raise ValueError("`x` was found neither in `data` nor in `states`; pass the trajectories as `x`.")


def model_from_dict(model: dict, data: dict | None = None) -> ARHMM:
    """`ARHMM` from a reference dict model `{"seed", "states", "params", "hypparams"}`."""
    p, s = model["params"], model["states"]
    params = Params(Ab=jnp.asarray(p["Ab"]), Q=jnp.asarray(p["Q"]), pi=jnp.asarray(p["pi"]),
                    betas=jnp.asarray(p["betas"]))
    return ARHMM(hyperparams_from_dict(model["hypparams"]), params, States(z=jnp.asarray(s["z"], jnp.int32)))


def model_to_dict(model: ARHMM, seed=None) -> dict:
    """The reference dict model of an `ARHMM`; `seed` defaults to `jr.PRNGKey(0)`."""
    p = model.params
    return {
        "seed": jr.PRNGKey(0) if seed is None else seed,
        "states": {"z": model.states.z},
        "params": {"Ab": p.Ab, "Q": p.Q, "pi": p.pi, "betas": p.betas},
        "hypparams": model.hyperparams.to_moseq_dicts(),
    }
