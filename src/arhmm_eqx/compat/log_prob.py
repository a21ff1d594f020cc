"""Compatible with `jax_moseq.models.arhmm.log_prob`.

Each function checks its arguments on the host, then runs as one compiled call.
"""

import equinox as _eqx
import jax as _jax
import jax.numpy as _jnp
import numpy as _np

from .. import _log_prob
from .._ar import ar_log_likelihoods as _ar_log_likelihoods
from .._checks import check_data as _check_data
from .._inference import marginal_log_likelihood as _marginal_log_likelihood
from . import _convert


def discrete_stateseq_log_prob(z, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.discrete_stateseq_log_prob`.

    **Returns:** `log pi[z[t-1], z[t]]`, shape `(..., T - nlags - 1)`.
    """
    return _discrete_jit(z, pi)


def continuous_stateseq_log_prob(x, z, Ab, Q, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.continuous_stateseq_log_prob`.

    **Returns:** `log Normal(x[t] | Ab[z[t]] u_t, Q[z[t]])`, shape `(..., T - nlags)` (no mask applied).
    """
    return _continuous_jit(x, z, Ab, Q)


def log_joint_likelihood(x, mask, z, pi, Ab, Q, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.log_joint_likelihood`.

    **Returns:** `{"z": sum(log_pz * mask[..., L+1:]), "x": sum(log_px * mask[..., L:])}`.
    NaN or inf in masked frames of `x` do not leak into the sums.
    """
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _log_joint_jit(x, mask, z, pi, Ab, Q)


def model_likelihood(data, states, params, hypparams=None, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.model_likelihood`.

    `x` is read from `states` when there, else from `data`.
    """
    x, mask = _convert.find_x(data, states, kwargs), _convert.find_mask(data)
    (z,) = _convert.require(states, ("z",), "`states`")
    pi, Ab, Q = _convert.require(params, ("pi", "Ab", "Q"), "`params`")
    return log_joint_likelihood(x, mask, z, pi, Ab, Q)


def state_cross_likelihoods(params, states, mask, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.state_cross_likelihoods`.

    `x` is read from `states` (or from a keyword argument `x`). Entry `[j, k]` is the
    summed log-likelihood under state `k`'s dynamics of the valid frames assigned to `j`,
    minus that under `j`'s own, divided by `n_j + 1e-6` (Wiltschko et al. 2015, supplement
    p. 33). As in the reference, `n_j` counts the changepoints into `j` of the valid frames
    of all sequences laid end to end as one series: the first run of that series is not
    counted, and a run continues across the end of a sequence and across masked gaps when
    the state on both sides is the same. (`ARHMM.state_cross_likelihoods` counts every run
    of each sequence instead.) A state with no counted changepoint gets `n_j = 0`.

    **Returns:** a NumPy float64 array `(K, K)`, as the reference.
    """
    x = _convert.find_x({}, states, kwargs)
    Ab, Q = _convert.require(params, ("Ab", "Q"), "`params`")
    (z,) = _convert.require(states, ("z",), "`states`")
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _np.asarray(_cross_jit(x, mask, z, Ab, Q), dtype=_np.float64)


def marginal_log_likelihood(mask, x, Ab, Q, pi, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.log_prob.marginal_log_likelihood`.

    **Returns:** `log p(x | Ab, Q, pi)`, a scalar, summed over sequences.
    """
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _marginal_jit(x, mask, Ab, Q, pi)


def _prepare(x, mask, Ab):
    x, mask = _check_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return x.astype(Ab.dtype), mask.astype(Ab.dtype)


def _changepoint_counts(z, valid, num_states: int):
    """Per state, the changepoints of the valid frames laid end to end (sequences in order):
    a valid frame counts for its state when the previous valid frame, in any sequence, is in
    another state."""
    z, valid = z.reshape(-1), valid.reshape(-1)
    idx = _jnp.arange(z.shape[0])
    last_valid = _jax.lax.cummax(_jnp.where(valid, idx, -1))  # latest valid index <= t
    prev = _jnp.concatenate([_jnp.full((1,), -1, last_valid.dtype), last_valid[:-1]])  # latest valid index < t
    starts = valid & (prev >= 0) & (z != z[_jnp.maximum(prev, 0)])
    return _jax.ops.segment_sum(starts.astype(_jnp.int32), z, num_segments=num_states)


@_eqx.filter_jit
def _discrete_jit(z, pi):
    return _log_prob.discrete_stateseq_log_prob(_jnp.asarray(z), _jnp.asarray(pi))


@_eqx.filter_jit
def _continuous_jit(x, z, Ab, Q):
    return _log_prob.continuous_stateseq_log_prob(_jnp.asarray(x), _jnp.asarray(z), Ab, Q)


@_eqx.filter_jit
def _log_joint_jit(x, mask, z, pi, Ab, Q):
    return _log_prob.log_joint_likelihood(*_prepare(x, mask, Ab), _jnp.asarray(z), pi, Ab, Q)


@_eqx.filter_jit
def _cross_jit(x, mask, z, Ab, Q, epsilon=1e-6):
    x, mask = _prepare(x, mask, Ab)
    K = Ab.shape[0]
    z = _jnp.asarray(z)
    nlags = _convert.nlags_of(Ab)
    ll = _ar_log_likelihoods(x, mask, Ab, Q)  # (N, Tz, K); masked rows are zero
    summed = _jax.ops.segment_sum(ll.reshape(-1, K), z.reshape(-1), num_segments=K)  # (K_j, K_k)
    counts = _changepoint_counts(z, mask[:, nlags:] > 0, K).astype(summed.dtype)
    return (summed - _jnp.diagonal(summed)[:, None]) / (counts[:, None] + epsilon)


@_eqx.filter_jit
def _marginal_jit(x, mask, Ab, Q, pi):
    return _marginal_log_likelihood(*_prepare(x, mask, Ab), Ab, Q, pi)
