"""Compatible with `jax_moseq.models.arhmm.gibbs`."""

import equinox as eqx
import jax.numpy as jnp

from .. import _stateseqs
from .._ar import resample_ar_params as _resample_ar_params
from .._checks import check_data
from .._model import ARHMM
from .._params import Params
from .._states import States
from .._transitions import resample_hdp_transitions as _resample_hdp_transitions
from ._convert import canonicalize_key, find_x, hyperparams_from_dict, split_seed


def _nlags(Ab) -> int:
    return (Ab.shape[2] - 1) // Ab.shape[1]


def resample_discrete_stateseqs(seed, x, mask, Ab, Q, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.resample_discrete_stateseqs`.

    **Returns:** `z`, shape `(N, T - nlags)`.
    """
    x, mask = check_data(x, mask, nlags=_nlags(Ab), latent_dim=Ab.shape[1])
    return _resample_stateseqs_jit(canonicalize_key(seed), x.astype(Ab.dtype), mask.astype(Ab.dtype), Ab, Q, pi)


def stateseq_marginals(x, mask, Ab, Q, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.stateseq_marginals`.

    **Returns:** smoothed marginals, shape `(N, T - nlags, num_states)` (model.md §3).
    """
    x, mask = check_data(x, mask, nlags=_nlags(Ab), latent_dim=Ab.shape[1])
    return _marginals_jit(x.astype(Ab.dtype), mask.astype(Ab.dtype), Ab, Q, pi)


def resample_ar_params(seed, *, nlags, num_states, mask, x, z, nu_0, S_0, M_0, K_0, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.resample_ar_params`.

    **Returns:** `(Ab, Q)` drawn from their MNIW conditional (model.md §2).
    """
    x, mask = check_data(x, mask, nlags=nlags)
    return _resample_ar_jit(
        canonicalize_key(seed), x, mask, jnp.asarray(z), nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0,
        num_states=num_states, nlags=nlags,
    )


def resample_hdp_transitions(seed, z, mask, betas, alpha, kappa, gamma, num_states, **kwargs):
    """Compatible with `jax_moseq.utils.transitions.resample_hdp_transitions` (model.md §1).

    `nlags` is taken from `kwargs` (or from the shapes of `z` and `mask`).

    **Returns:** `(betas, pi)`.
    """
    nlags = kwargs.get("nlags", mask.shape[1] - z.shape[1])
    mask = jnp.asarray(mask > 0, jnp.asarray(betas).dtype)
    return _resample_trans_jit(
        canonicalize_key(seed), jnp.asarray(z), mask, jnp.asarray(betas), alpha=alpha, kappa=kappa, gamma=gamma,
        num_states=num_states, nlags=nlags,
    )


def resample_model(data, seed, states, params, hypparams, states_only=False, verbose=False, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.resample_model`.

    One Gibbs sweep. `x` is read from `states` when there (models built on the AR-HMM,
    such as an SLDS, keep it among their states) or else from `data`. Every key of
    `data`, `states`, `params` and `hypparams` is kept in the returned dicts (new dicts;
    the inputs are not modified).

    **Returns:** `{"seed", "states", "params", "hypparams"}` with a fresh `seed`.

    !!! info
        The three blocks draw from independent subkeys (the reference reuses one key
        for all three); the chain is equal in distribution, not bit for bit.
    """
    seed, key = split_seed(seed)
    hp = hyperparams_from_dict(hypparams)
    x = find_x(data, states, kwargs)
    model = ARHMM(
        hp,
        Params(Ab=jnp.asarray(params["Ab"]), Q=jnp.asarray(params["Q"]), pi=jnp.asarray(params["pi"]),
               betas=jnp.asarray(params["betas"])),
        States(z=jnp.asarray(states["z"], jnp.int32)),
    )
    if verbose:
        print("ARHMM: Resampling " + ("states" if states_only else "transitions, AR parameters and states"))
    new = model.resample(x, data["mask"], key=key, states_only=bool(states_only))
    p = new.params
    params = {**params, "Ab": p.Ab, "Q": p.Q, "pi": p.pi, "betas": p.betas}
    states = {**states, "z": new.states.z}
    return {"seed": seed, "states": states, "params": params, "hypparams": hypparams}


_resample_stateseqs_jit = eqx.filter_jit(_stateseqs.resample_discrete_stateseqs)
_marginals_jit = eqx.filter_jit(_stateseqs.stateseq_marginals)
_resample_ar_jit = eqx.filter_jit(_resample_ar_params)
_resample_trans_jit = eqx.filter_jit(_resample_hdp_transitions)

__all__ = [
    "resample_discrete_stateseqs",
    "stateseq_marginals",
    "resample_ar_params",
    "resample_hdp_transitions",
    "resample_model",
]
