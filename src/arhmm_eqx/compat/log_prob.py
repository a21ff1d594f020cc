"""Compatible with `jax_moseq.models.arhmm.log_prob`."""

import equinox as eqx
import jax.numpy as jnp

from .. import _log_prob, _stateseqs
from .._checks import check_data
from ._convert import find_x


def _nlags(Ab) -> int:
    return (Ab.shape[2] - 1) // Ab.shape[1]


def discrete_stateseq_log_prob(z, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.discrete_stateseq_log_prob`.

    **Returns:** `log pi[z[t-1], z[t]]`, shape `(..., T - nlags - 1)`.
    """
    return _log_prob.discrete_stateseq_log_prob(jnp.asarray(z), jnp.asarray(pi))


def continuous_stateseq_log_prob(x, z, Ab, Q, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.continuous_stateseq_log_prob`.

    **Returns:** `log Normal(x[t] | Ab[z[t]] u_t, Q[z[t]])`, shape `(..., T - nlags)` (no mask applied).
    """
    return _continuous_jit(jnp.asarray(x), jnp.asarray(z), jnp.asarray(Ab), jnp.asarray(Q))


def log_joint_likelihood(x, mask, z, pi, Ab, Q, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.log_joint_likelihood`.

    **Returns:** `{"z": sum(log_pz * mask[..., L+1:]), "x": sum(log_px * mask[..., L:])}`.
    NaN or inf in masked frames of `x` do not leak into the sums.
    """
    x, mask = check_data(x, mask, nlags=_nlags(Ab), latent_dim=Ab.shape[1])
    return _log_joint_jit(x, mask, jnp.asarray(z), jnp.asarray(pi), jnp.asarray(Ab), jnp.asarray(Q))


def model_likelihood(data, states, params, hypparams=None, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.model_likelihood`.

    `x` is read from `states` when there, else from `data`.
    """
    x = find_x(data, states, kwargs)
    return log_joint_likelihood(x, data["mask"], states["z"], params["pi"], params["Ab"], params["Q"])


def state_cross_likelihoods(params, states, mask, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.state_cross_likelihoods`.

    `x` is read from `states` (or from a keyword argument `x`). **Returns:** `(K, K)`,
    entry `[j, k]` the summed log-likelihood under state `k`'s dynamics of the frames
    assigned to `j`, minus that under `j`'s own, per run of `j` (model.md).
    """
    x = find_x({}, states, kwargs)
    Ab = params["Ab"]
    x, mask = check_data(x, mask, nlags=_nlags(Ab), latent_dim=Ab.shape[1])
    return _cross_jit(x, mask, jnp.asarray(states["z"]), Ab, params["Q"])


def marginal_log_likelihood(mask, x, Ab, Q, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.marginal_log_likelihood`.

    **Returns:** `log p(x | Ab, Q, pi)`, a scalar, summed over sequences.
    """
    x, mask = check_data(x, mask, nlags=_nlags(Ab), latent_dim=Ab.shape[1])
    return _marginal_jit(x, mask, Ab, Q, pi)


_continuous_jit = eqx.filter_jit(_log_prob.continuous_stateseq_log_prob)
_log_joint_jit = eqx.filter_jit(_log_prob.log_joint_likelihood)
_cross_jit = eqx.filter_jit(_log_prob.state_cross_likelihoods)
_marginal_jit = eqx.filter_jit(_stateseqs.marginal_log_likelihood)
