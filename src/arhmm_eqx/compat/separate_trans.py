"""Compatible with `jax_moseq.models.arhmm.separate_trans`: one transition matrix per group.

Sessions carry their group in `data["group"]` (an integer `0 .. G-1` per sequence). As in
the reference, every group is an independent sticky HDP: `betas` `(G, K)` and `pi`
`(G, K, K)` both have a leading group axis, while `Ab` and `Q` are shared. (The native
`Hyperparams(..., num_groups=G)` model shares one `betas` between the groups instead.)

The per-group transition helpers of `jax_moseq.utils.transitions`
(`count_transitions_by_group`, `resample_hdp_transitions_by_group`,
`init_hdp_transitions_by_group`) are here too. Like the rest of `compat`, the functions
check their arguments on the host, then run as one compiled call each, on the native
kernels (`_group_transitions`, `_ar`, `_inference`).

!!! info
    Transition counts follow model.md's masking rule (a transition counts when the frame it
    enters is valid or is followed later in its sequence by a valid one), as everywhere in
    this library; the reference counts only transitions into valid frames. They agree on
    data whose masked frames are all trailing padding. The blocks draw from independent
    subkeys (the reference reuses one key), so chains are equal in distribution, not bit
    for bit.
"""

import equinox as _eqx
import jax as _jax
import jax.numpy as _jnp
import jax.random as _jr
import numpy as _np

from .._ar import init_ar_params as _init_ar_kernel, resample_ar_params as _resample_ar_kernel
from .._checks import check_data as _check_data
from .._group_transitions import (
    count_group_transitions as _count_kernel,
    init_separate_hdp_transitions as _init_trans_kernel,
    resample_separate_hdp_transitions as _resample_trans_kernel,
)
from .._inference import sample_stateseqs as _sample_stateseqs
from . import _convert
from .initialize import init_hyperparams as _init_hyperparams


def _groups(group, num_sequences: int, num_groups: int | None = None):
    """`data["group"]` checked on the host: integers of shape `(N,)` in `0 .. G-1`."""
    g = _np.asarray(group)
    if g.shape != (num_sequences,) or not _np.issubdtype(g.dtype, _np.integer):
        raise ValueError(f"`group` must be integers of shape ({num_sequences},), one group per sequence; "
                         f"got {g.dtype} of shape {g.shape}.")
    if g.size and (g.min() < 0 or (num_groups is not None and g.max() >= num_groups)):
        raise ValueError(f"`group` must hold groups 0 .. {'G-1' if num_groups is None else num_groups - 1}; "
                         f"found {int(g.min()) if g.min() < 0 else int(g.max())}.")
    return g


def _grouped_hypparams(data, states, hypparams, trans_hypparams, ar_hypparams, num_groups, init_hyperparams):
    """The checks and the `hypparams` of a grouped `init_model`: `hypparams` (or `init_hyperparams`
    of the two dicts) with `trans_hypparams["num_groups"]`, by default one more than the largest
    `data["group"]`. **Returns:** `(hypparams, num_groups)`."""
    if not (data or states):
        raise ValueError("init_model needs `data` (with `x`, `mask` and `group`) or `states`.")
    if hypparams is None:
        if not (trans_hypparams and ar_hypparams):
            raise ValueError("Pass either `hypparams` or both `trans_hypparams` and `ar_hypparams` to init_model.")
        hypparams = init_hyperparams(trans_hypparams, ar_hypparams)
    else:
        hypparams = _convert.hypparams_as_scalars(hypparams)
    if num_groups is None:
        if not data or "group" not in data:
            raise ValueError("init_model needs `num_groups` or `data['group']` (one group per sequence).")
        num_groups = int(_np.max(_np.asarray(data["group"]))) + 1
    num_groups = int(num_groups)
    hypparams = {**hypparams, "trans_hypparams": {**hypparams["trans_hypparams"], "num_groups": num_groups}}
    return hypparams, num_groups


def count_transitions_by_group(num_states, num_groups, stateseqs, mask, group):
    """Compatible with `jax_moseq.utils.transitions.count_transitions_by_group`.

    **Returns:** transition counts `(num_groups, num_states, num_states)`.
    """
    group = _groups(group, _np.shape(stateseqs)[0], int(num_groups))
    return _count_jit(stateseqs, mask, group, num_states=int(num_states), num_groups=int(num_groups))


def resample_hdp_transitions_by_group(seed, z, mask, group, betas, alpha, kappa, gamma, num_groups=None, **kwargs):
    """Compatible with `jax_moseq.utils.transitions.resample_hdp_transitions_by_group`.

    Each group's `(betas[g], pi[g])` is one Gibbs update of its own sticky HDP given its
    transitions. **Returns:** `(betas, pi)` of shapes `(G, K)` and `(G, K, K)`.
    """
    G = _np.shape(betas)[0] if num_groups is None else int(num_groups)
    group = _groups(group, _np.shape(z)[0], G)
    nlags = int(kwargs.get("nlags", _np.shape(mask)[1] - _np.shape(z)[1]))
    alpha, kappa, gamma = (_convert.host_scalar(v) for v in (alpha, kappa, gamma))
    return _resample_trans_jit(_convert.canonicalize_key(seed), z, mask, group, betas, alpha, kappa, gamma,
                               num_groups=G, nlags=nlags)


def init_hdp_transitions_by_group(seed, num_states, num_groups, alpha, kappa, gamma, **kwargs):
    """Compatible with `jax_moseq.utils.transitions.init_hdp_transitions_by_group`.

    **Returns:** `(betas, pi)` of shapes `(G, K)` and `(G, K, K)` from the prior.
    """
    alpha, kappa, gamma = (_convert.host_scalar(v) for v in (alpha, kappa, gamma))
    return _init_trans_jit(_convert.canonicalize_key(seed), alpha, kappa, gamma, num_states=int(num_states),
                           num_groups=int(num_groups))


def resample_discrete_stateseqs(seed, x, mask, group, Ab, Q, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.separate_trans.resample_discrete_stateseqs`:
    every sequence's states given its group's `pi[group[n]]`. **Returns:** `z` `(N, T - nlags)`."""
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    group = _groups(group, x.shape[0], _np.shape(pi)[0])
    return _resample_stateseqs_jit(_convert.canonicalize_key(seed), x, mask, group, Ab, Q, pi)


def resample_model(data, seed, states, params, hypparams, states_only=False, verbose=False, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.separate_trans.resample_model`.

    One sweep (per-group transitions, shared AR parameters, states), as one compiled call;
    `data` needs `x`, `mask` and `group`. **Returns:** `{"seed", "states", "params", "hypparams"}`.
    """
    hp = _convert.hyperparams_from_dict(hypparams)
    x, mask = _convert.find_x(data, states, kwargs), _convert.find_mask(data)
    x, mask = _convert.host_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    Ab, Q, pi, betas = _convert.require(params, ("Ab", "Q", "pi", "betas"), "`params`")
    (z,) = _convert.require(states, ("z",), "`states`")
    (group,) = _convert.require(data, ("group",), "`data`")
    group = _groups(group, x.shape[0], _np.shape(pi)[0])
    if verbose:
        print("Separate-trans ARHMM: Resampling " + ("states" if states_only else "per-group transitions, "
                                                       "AR parameters and states"))
    seed, new = _resample_model_jit(_convert.canonicalize_key(seed), hp, Ab, Q, pi, betas, z, x, mask, group,
                                    states_only=bool(states_only))
    return {"seed": seed, "states": {**states, "z": new["z"]}, "params": {**params, **new["params"]},
            "hypparams": hypparams}


def init_model(data=None, states=None, params=None, hypparams=None, seed=_convert.DEFAULT_SEED, trans_hypparams=None,
               ar_hypparams=None, num_groups=None, verbose=False, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.separate_trans.init_model`.

    `num_groups` defaults to one more than the largest `data["group"]`; it is stored in
    `hypparams["trans_hypparams"]["num_groups"]`. Missing parameters come from the prior
    (`betas[g]`, `pi[g]` per group, shared `Ab`, `Q`), missing states from their conditional
    given `data`. **Returns:** `{"seed", "states", "params", "hypparams"}`.
    """
    hypparams, num_groups = _grouped_hypparams(data, states, hypparams, trans_hypparams, ar_hypparams, num_groups,
                                               _init_hyperparams)
    seed = _convert.canonicalize_key(seed)
    hp = _convert.hyperparams_from_dict(hypparams)
    x = mask = group = None
    if states is None:
        x, mask = _convert.find_x(data, None, kwargs), _convert.find_mask(data)
        x, mask = _convert.host_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
        (group,) = _convert.require(data, ("group",), "`data`")
        group = _groups(group, x.shape[0], num_groups)
    params = None if params is None else _jax.device_put(params)
    states = None if states is None else _jax.device_put(states)
    if params is None or states is None:
        if verbose:
            print("Separate-trans ARHMM: Initializing " + " and ".join(
                n for n, given in (("parameters", params), ("states", states)) if given is None))
        drawn = _init_model_jit(seed, hp, params, x, mask, group, num_groups=num_groups)
        params = drawn["params"] if params is None else params
        states = {"z": drawn["z"]} if states is None else states
    return {"seed": seed, "states": states, "params": params, "hypparams": hypparams}


def _z32(z):
    return _jnp.asarray(z).astype(_jnp.int32)


def _prepare(x, mask, Ab):
    x, mask = _check_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return x.astype(Ab.dtype), mask.astype(Ab.dtype)


@_eqx.filter_jit
def _count_jit(z, mask, group, *, num_states, num_groups):
    mask = _jnp.asarray(mask)
    nlags = mask.shape[1] - _jnp.shape(z)[1]
    mask = (mask > 0).astype(_jnp.result_type(float))
    return _count_kernel(_z32(z), mask, _z32(group), num_states=num_states, num_groups=num_groups, nlags=nlags)


@_eqx.filter_jit
def _resample_trans_jit(key, z, mask, group, betas, alpha, kappa, gamma, *, num_groups, nlags):
    betas = _jnp.asarray(betas)
    dtype = betas.dtype
    mask = (_jnp.asarray(mask) > 0).astype(dtype)
    alpha, kappa, gamma = (_jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    return _resample_trans_kernel(key, _z32(z), mask, _z32(group), betas, alpha=alpha, kappa=kappa, gamma=gamma,
                                  num_states=betas.shape[-1], num_groups=num_groups, nlags=nlags)


@_eqx.filter_jit
def _init_trans_jit(key, alpha, kappa, gamma, *, num_states, num_groups):
    return _init_trans_kernel(key, alpha=alpha, kappa=kappa, gamma=gamma, num_states=num_states,
                              num_groups=num_groups)


@_eqx.filter_jit
def _resample_stateseqs_jit(key, x, mask, group, Ab, Q, pi):
    z, _, _ = _sample_stateseqs(key, *_prepare(x, mask, Ab), Ab, Q, _jnp.asarray(pi)[_z32(group)])
    return z.astype(_convert.default_int())


@_eqx.filter_jit
def _resample_model_jit(seed, hp, Ab, Q, pi, betas, z, x, mask, group, *, states_only):
    seed, key = _jr.split(seed)
    key_trans, key_ar, key_z = _jr.split(key, 3)  # as the native sweep
    hp = hp.astype(Ab.dtype)
    x, mask = _prepare(x, mask, Ab)
    z, group = _z32(z), _z32(group)
    out = {"params": {}}
    if not states_only:
        betas, pi = _resample_trans_kernel(
            key_trans, z, mask, group, _jnp.asarray(betas, Ab.dtype), alpha=hp.alpha, kappa=hp.kappa,
            gamma=hp.gamma, num_states=hp.num_states, num_groups=_jnp.shape(pi)[0], nlags=hp.nlags,
        )
        Ab, Q = _resample_ar_kernel(key_ar, x, mask, z, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0,
                                    num_states=hp.num_states, nlags=hp.nlags)
        out["params"] = {"Ab": Ab, "Q": Q, "pi": pi, "betas": betas}
    z, _, _ = _sample_stateseqs(key_z, x, mask, Ab, Q, pi[group])
    out["z"] = z.astype(_convert.default_int())
    return seed, out


@_eqx.filter_jit
def _init_model_jit(key, hp, params, x, mask, group, *, num_groups):
    key_params, key_states = _jr.split(key)
    out = {}
    if params is None:
        key_ar, key_trans = _jr.split(key_params)
        dtype = _jnp.result_type(float)
        Ab, Q = _init_ar_kernel(key_ar, nu_0=hp.nu_0.astype(dtype), S_0=hp.S_0.astype(dtype),
                                M_0=hp.M_0.astype(dtype), K_0=hp.K_0.astype(dtype), num_states=hp.num_states)
        betas, pi = _init_trans_kernel(key_trans, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma,
                                       num_states=hp.num_states, num_groups=num_groups, dtype=dtype)
        out["params"] = {"Ab": Ab, "Q": Q, "betas": betas, "pi": pi}
    else:
        Ab, Q, pi = params["Ab"], params["Q"], _jnp.asarray(params["pi"])
    if x is not None:
        z, _, _ = _sample_stateseqs(key_states, *_prepare(x, mask, Ab), Ab, Q, pi[_z32(group)])
        out["z"] = z.astype(_convert.default_int())
    return out
