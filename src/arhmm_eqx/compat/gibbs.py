"""Compatible with `jax_moseq.models.arhmm.gibbs`.

Each function checks its arguments on the host, then runs as one compiled call. Integer
outputs (`z`) have the default integer dtype of the current mode, as in the reference.
"""

import equinox as _eqx
import jax.numpy as _jnp
import jax.random as _jr

from .. import _cores, _gibbs
from .._ar import resample_ar_params as _resample_ar_kernel
from .._checks import check_data as _check_data, values_checked as _values_checked
from .._inference import (
    sample_stateseqs as _sample_stateseqs,
    smoothed_marginals as _smoothed_marginals,
    viterbi_paths as _viterbi_paths,
)
from .._params import Params as _Params
from .._states import States as _States
from .._transitions import resample_hdp_transitions as _resample_trans_kernel
from . import _convert


def resample_discrete_stateseqs(seed, x, mask, Ab, Q, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.resample_discrete_stateseqs`.

    **Returns:** `z`, shape `(N, T - nlags)`.
    """
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _resample_stateseqs_jit(_convert.canonicalize_key(seed), x, mask, Ab, Q, pi)


def stateseq_marginals(x, mask, Ab, Q, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.stateseq_marginals`.

    **Returns:** smoothed marginals, shape `(N, T - nlags, num_states)` (model.md §3).
    """
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _marginals_jit(x, mask, Ab, Q, pi)


def stateseq_mode(x, mask, Ab, Q, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.stateseq_mode`.

    The most likely state path of every sequence (Viterbi), with a uniform initial state
    and masked frames contributing no likelihood; the states of masked frames are those of
    the jointly most likely path. Deterministic: the same data get the same labels.

    **Returns:** `z`, shape `(N, T - nlags)`, of the default integer dtype.
    """
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _mode_jit(x, mask, Ab, Q, pi)


def resample_ar_params(seed, *, nlags, num_states, mask, x, z, nu_0, S_0, M_0, K_0, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.resample_ar_params`.

    **Returns:** `(Ab, Q)` drawn from their MNIW conditional (model.md §2).
    """
    x, mask = _convert.host_data(x, mask, nlags=nlags)
    nu_0, S_0, M_0, K_0 = (_convert.host_scalar(v) for v in (nu_0, S_0, M_0, K_0))
    return _resample_ar_jit(
        _convert.canonicalize_key(seed), x, mask, z, nu_0, S_0, M_0, K_0, num_states=int(num_states), nlags=int(nlags)
    )


def resample_hdp_transitions(seed, z, mask, betas, alpha, kappa, gamma, **kwargs):
    """Compatible with `jax_moseq.utils.transitions.resample_hdp_transitions` (model.md §1).

    The number of states is `len(betas)`, as in the reference. `nlags` is taken from
    `kwargs` when there, else from the shapes of `z` and `mask` (`T - (T - nlags)`).

    **Returns:** `(betas, pi)`.
    """
    nlags = int(kwargs.get("nlags", mask.shape[1] - z.shape[1]))
    alpha, kappa, gamma = (_convert.host_scalar(v) for v in (alpha, kappa, gamma))
    return _resample_trans_jit(_convert.canonicalize_key(seed), z, mask, betas, alpha, kappa, gamma, nlags=nlags)


def resample_model(data, seed, states, params, hypparams, states_only=False, verbose=False, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.gibbs.resample_model`.

    One Gibbs sweep, as one compiled call. `x` is read from `states` when there (models
    built on the AR-HMM, such as an SLDS, keep it among their states) or else from `data`.
    Every key of `data`, `states`, `params` and `hypparams` is kept in the returned dicts
    (new dicts; the inputs are not modified).

    **Returns:** `{"seed", "states", "params", "hypparams"}` with a fresh `seed`.

    !!! info
        The three blocks draw from independent subkeys (the reference reuses one key
        for all three); the chain is equal in distribution, not bit for bit.
    """
    hp = _convert.hyperparams_from_dict(hypparams)
    x, mask = _convert.find_x(data, states, kwargs), _convert.find_mask(data)
    x, mask = _convert.host_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    Ab, Q, pi, betas = _convert.require(params, ("Ab", "Q", "pi", "betas"), "`params`")
    (z,) = _convert.require(states, ("z",), "`states`")
    if verbose:
        print("ARHMM: Resampling " + ("states" if states_only else "transitions, AR parameters and states"))
    args = (_convert.canonicalize_key(seed), hp, Ab, Q, pi, betas)
    checked = _values_checked(x, mask)
    mesh = _cores.sequence_mesh(x)  # large CPU data: the sequences split over one CPU device per core
    if mesh is not None:
        args, (z, x, mask) = _cores.replicated(args, mesh), _cores.split((z, x, mask), mesh)
    seed, new = _resample_model_jit(*args, z, x, mask, states_only=bool(states_only), checked=checked)
    if mesh is not None:
        seed, new = _cores.to_first_device((seed, new), mesh)
    return {"seed": seed, "states": {**states, "z": new["z"]}, "params": {**params, **new["params"]},
            "hypparams": hypparams}


def _z32(z):
    return _jnp.asarray(z).astype(_jnp.int32)


def _prepare(x, mask, Ab, checked: bool = False):
    """`checked`: the host has checked the values (no `eqx.error_if`, whose host callback would
    gather data split over devices onto one)."""
    x, mask = _check_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1], values_checked=checked)
    return x.astype(Ab.dtype), mask.astype(Ab.dtype)


@_eqx.filter_jit
def _resample_stateseqs_jit(key, x, mask, Ab, Q, pi):
    z, _, _ = _sample_stateseqs(key, *_prepare(x, mask, Ab), Ab, Q, pi)
    return z.astype(_convert.default_int())


@_eqx.filter_jit
def _marginals_jit(x, mask, Ab, Q, pi):
    return _smoothed_marginals(*_prepare(x, mask, Ab), Ab, Q, pi)


@_eqx.filter_jit
def _mode_jit(x, mask, Ab, Q, pi):
    return _viterbi_paths(*_prepare(x, mask, Ab), Ab, Q, pi, fill_value=None).astype(_convert.default_int())


@_eqx.filter_jit
def _resample_ar_jit(key, x, mask, z, nu_0, S_0, M_0, K_0, *, num_states, nlags):
    x, mask = _check_data(x, mask, nlags=nlags)
    nu_0, S_0, M_0, K_0 = (_jnp.asarray(v).astype(x.dtype) for v in (nu_0, S_0, M_0, K_0))
    return _resample_ar_kernel(key, x, mask, _z32(z), nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0, num_states=num_states,
                               nlags=nlags)


@_eqx.filter_jit
def _resample_trans_jit(key, z, mask, betas, alpha, kappa, gamma, *, nlags):
    betas = _jnp.asarray(betas)
    dtype = betas.dtype
    mask = (_jnp.asarray(mask) > 0).astype(dtype)
    alpha, kappa, gamma = (_jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    return _resample_trans_kernel(key, _z32(z), mask, betas, alpha=alpha, kappa=kappa, gamma=gamma,
                                  num_states=betas.shape[0], nlags=nlags)


@_eqx.filter_jit
def _resample_model_jit(seed, hp, Ab, Q, pi, betas, z, x, mask, *, states_only, checked):
    seed, key = _jr.split(seed)
    params = _Params(Ab=Ab, Q=Q, pi=pi, betas=betas)
    hp = hp.astype(Ab.dtype)  # the model computes in the dtype of its parameters, as `ARHMM` does
    options = _gibbs.SweepOptions(states_only=states_only)
    p, states, _ = _gibbs.gibbs_sweep(key, hp, params, _States(z=_z32(z)), *_prepare(x, mask, Ab, checked), options)
    out = {"z": states.z.astype(_convert.default_int())}
    out["params"] = {} if states_only else {"Ab": p.Ab, "Q": p.Q, "pi": p.pi, "betas": p.betas}
    return seed, out
