"""Compatible with `jax_moseq.models.robust_arhmm.separate_trans`: robust noise, one transition matrix per group.

The robust model of `compat.robust_arhmm` with the per-group transitions of
`compat.separate_trans`: sessions carry their group in `data["group"]` (an integer
`0 .. G-1` per sequence); every group is an independent sticky HDP (`betas` `(G, K)`, `pi`
`(G, K, K)`), while `Ab`, `Q` and the degrees of freedom `nu` are shared by all groups.

!!! info
    The sweep's order is that of the native robust sweep (model.md, "Robust noise"):
    per-group transitions, `(Ab, Q)` given `tau`, `nu`, then `z` with `tau` integrated out
    and `tau` given the new `z`, so the returned `tau` belongs to the returned `z` (the
    reference draws `tau` first, given the old `z`). Independent subkeys: equal to the
    reference's chain in distribution, not bit for bit.
"""

import equinox as _eqx
import jax.numpy as _jnp
import jax.random as _jr
import numpy as _np

from ... import _robust
from ..._ar import resample_ar_params as _resample_ar_kernel
from ..._group_transitions import resample_separate_hdp_transitions as _resample_trans_kernel
from ..._inference import sample_stateseqs as _sample_stateseqs
from .. import _convert
from ..separate_trans import (
    _grouped_hypparams,
    _groups,
    init_hdp_transitions_by_group as _init_hdp_transitions_by_group,
)
from .gibbs import (
    _prepare,
    hyperparams_with_reference_prior as _hyperparams_with_reference_prior,
    resample_tau as _resample_tau,
)
from .initialize import (
    DEFAULT_NU as DEFAULT_NU,
    NU_MH_STEPS as NU_MH_STEPS,
    init_ar_params as _init_ar_params,
    init_nu as _init_nu,
    init_robust_hyperparams as _init_robust_hyperparams,
)


def _z32(z):
    return _jnp.asarray(z).astype(_jnp.int32)


def resample_discrete_stateseqs(seed, x, mask, group, Ab, Q, nu, pi, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.separate_trans.resample_discrete_stateseqs`:
    every sequence's states given the Student-t emissions (`tau` integrated out) and its group's
    `pi[group[n]]`. **Returns:** `z` `(N, T - nlags)`."""
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    group = _groups(group, x.shape[0], _np.shape(pi)[0])
    return _stateseqs_jit(_convert.canonicalize_key(seed), x, mask, group, Ab, Q, nu, pi)


@_eqx.filter_jit
def _stateseqs_jit(key, x, mask, group, Ab, Q, nu, pi):
    pi = _jnp.asarray(pi)[_z32(group)]
    z, _, _ = _sample_stateseqs(key, *_prepare(x, mask, Ab), Ab, Q, pi, nu=_jnp.asarray(nu).astype(Ab.dtype))
    return z.astype(_convert.default_int())


def resample_model(data, seed, states, params, hypparams, states_only=False, verbose=False, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.separate_trans.resample_model`: one sweep
    (per-group transitions, shared `(Ab, Q)` given `tau`, shared `nu`, then `z` and `tau`) as one
    compiled call; `data` needs `x`, `mask` and `group`. With `states_only`, only `z` and `tau`.

    **Returns:** `{"seed", "states", "params", "hypparams"}` with a fresh `seed`.
    """
    hp = _hyperparams_with_reference_prior(hypparams)
    x, mask = _convert.find_x(data, states, kwargs), _convert.find_mask(data)
    x, mask = _convert.host_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    Ab, Q, pi, betas, nu = _convert.require(params, ("Ab", "Q", "pi", "betas", "nu"), "`params`")
    (z,) = _convert.require(states, ("z",), "`states`")
    (group,) = _convert.require(data, ("group",), "`data`")
    group = _groups(group, x.shape[0], _np.shape(pi)[0])
    tau = states.get("tau")
    if tau is None:
        tau = _jnp.ones(_jnp.shape(z), _jnp.asarray(Ab).dtype)
    if verbose:
        print("Separate-trans robust ARHMM: Resampling " + (
            "states" if states_only else "per-group transitions, AR parameters, nu and states"))
    seed, new = _model_jit(_convert.canonicalize_key(seed), hp, Ab, Q, pi, betas, nu, z, tau, x, mask, group,
                           states_only=bool(states_only))
    return {"seed": seed, "states": {**states, "z": new["z"], "tau": new["tau"]},
            "params": {**params, **new["params"]}, "hypparams": hypparams}


@_eqx.filter_jit
def _model_jit(seed, hp, Ab, Q, pi, betas, nu, z, tau, x, mask, group, *, states_only):
    seed, key = _jr.split(seed)
    key_trans, key_ar, key_z = _jr.split(key, 3)  # as the native sweep
    key_nu, key_tau = _robust.robust_subkeys(key)
    hp = hp.astype(Ab.dtype)
    robust = hp.robust
    x, mask = _prepare(x, mask, Ab)
    z, group = _z32(z), _z32(group)
    nu, tau, pi = _jnp.asarray(nu).astype(Ab.dtype), _jnp.asarray(tau).astype(Ab.dtype), _jnp.asarray(pi)
    out = {"params": {}}
    if not states_only:
        betas, pi = _resample_trans_kernel(
            key_trans, z, mask, group, _jnp.asarray(betas, Ab.dtype), alpha=hp.alpha, kappa=hp.kappa,
            gamma=hp.gamma, num_states=hp.num_states, num_groups=pi.shape[0], nlags=hp.nlags,
        )
        Ab, Q = _resample_ar_kernel(key_ar, x, mask, z, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0,
                                    num_states=hp.num_states, nlags=hp.nlags, tau=tau)
        if robust.resample_nu:
            nu = _robust.resample_nu(key_nu, tau, mask, z, nu, nu_shape=robust.nu_shape, nu_rate=robust.nu_rate,
                                     num_steps=robust.nu_mh_steps, step_size=robust.nu_step_size)
        out["params"] = {"Ab": Ab, "Q": Q, "pi": pi, "betas": betas, "nu": nu}
    z, _, _ = _sample_stateseqs(key_z, x, mask, Ab, Q, pi[group], nu=nu)
    out["tau"] = _robust.resample_tau(key_tau, x, mask, z, Ab, Q, nu)
    out["z"] = z.astype(_convert.default_int())
    return seed, out


def init_model(data=None, states=None, params=None, hypparams=None, seed=_convert.DEFAULT_SEED, trans_hypparams=None,
               ar_hypparams=None, num_groups=None, verbose=False, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.separate_trans.init_model`.

    `num_groups` defaults to one more than the largest `data["group"]`; it is stored in
    `hypparams["trans_hypparams"]["num_groups"]`. Missing parameters come from the prior
    (`betas[g]`, `pi[g]` per group, shared `Ab`, `Q`, and `nu` from `init_nu` with
    `ar_hypparams["nu_init"]`, `["nu_init_steps"]`); missing states are `z` given the data and
    then `tau` given `z`. **Returns:** `{"seed", "states", "params", "hypparams"}`.
    """
    hypparams, num_groups = _grouped_hypparams(data, states, hypparams, trans_hypparams, ar_hypparams, num_groups,
                                               _init_robust_hyperparams)
    seed = _convert.canonicalize_key(seed)
    trans, ar = hypparams["trans_hypparams"], hypparams["ar_hypparams"]
    if params is None:
        if verbose:
            print("Separate-trans robust ARHMM: Initializing parameters")
        key_trans, key_ar, key_nu = _jr.split(seed, 3)
        betas, pi = _init_hdp_transitions_by_group(key_trans, trans["num_states"], num_groups, trans["alpha"],
                                                    trans["kappa"], trans["gamma"])
        Ab, Q = _init_ar_params(key_ar, **ar)
        nu = _init_nu(key_nu, trans["num_states"], ar.get("nu_init", DEFAULT_NU), ar.get("nu_init_steps", NU_MH_STEPS))
        params = {"betas": betas, "pi": pi, "Ab": Ab, "Q": Q, "nu": nu}
    if states is None:
        if verbose:
            print("Separate-trans robust ARHMM: Initializing states")
        x, mask = _convert.find_x(data, None, kwargs), _convert.find_mask(data)
        (group,) = _convert.require(data, ("group",), "`data`")
        key_z, key_tau = _jr.split(_jr.fold_in(seed, 1))
        p = params
        z = resample_discrete_stateseqs(key_z, x, mask, group, p["Ab"], p["Q"], p["nu"], p["pi"])
        states = {"z": z, "tau": _resample_tau(key_tau, x, mask, z, p["Ab"], p["Q"], p["nu"])}
    return {"seed": seed, "states": states, "params": params, "hypparams": hypparams}
