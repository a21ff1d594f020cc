"""Gradient fitting: the log posterior as a function of unconstrained parameters, minimised with optax.

The marginal log-likelihood (`_inference.stable_marginal_log_likelihood`) is
differentiable (reverse mode stores the filter's messages, a few `N Tz K` arrays) with
respect to the parameters and to `x`. So the model can also sit inside a larger JAX
model, e.g. `jax.grad(lambda x: model.log_posterior(x, mask))(x)` makes the AR-HMM a
prior on latent trajectories.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jax import lax

from ._checks import check_data, check_int
from ._custom_types import Array, DataArray, Float, MaskArray, PRNGKeyArray
from ._inference import stable_marginal_log_likelihood, viterbi_paths
from ._linalg import psd_cholesky
from ._log_posterior import log_prior
from ._model import ARHMM
from ._params import Params
from ._states import States
from ._transitions import floor_and_normalize


class UnconstrainedParams(eqx.Module):
    """`Ab`, `Q` and `pi` mapped to unconstrained real arrays (`betas` are not fitted).

    - `Ab`: as is, `(K, D, A)`.
    - `Q_chol`: `(K, D, D)`; `Q = L L^T` with `L` the lower triangle of `Q_chol` whose
      diagonal is replaced by its exponential (so `Q` is positive definite for any value).
    - `pi_logits`: `(K, K)`; `pi = softmax(pi_logits)` per row, floored at the dtype's `tiny`
      as the sampler's `pi` is, so that `log pi` stays finite.
    """

    Ab: Float[Array, "K D A"]
    Q_chol: Float[Array, "K D D"]
    pi_logits: Float[Array, "K K"]

    @classmethod
    def from_params(cls, params: Params) -> "UnconstrainedParams":
        """The unconstrained coordinates of `params` (`Q` through its Cholesky factor, `pi` through its log)."""
        L = psd_cholesky(params.Q)
        D = L.shape[-1]
        eye = jnp.eye(D, dtype=bool)
        Q_chol = jnp.where(eye, jnp.log(jnp.where(eye, L, jnp.ones((), L.dtype))), jnp.tril(L, -1))
        return cls(Ab=params.Ab, Q_chol=Q_chol, pi_logits=jnp.log(params.pi))

    def to_params(self, betas: Float[Array, " K"]) -> Params:
        """`Params` with these `Ab`, `Q`, `pi` and the given `betas`."""
        D = self.Q_chol.shape[-1]
        eye = jnp.eye(D, dtype=bool)
        L = jnp.where(eye, jnp.exp(self.Q_chol), jnp.tril(self.Q_chol, -1))
        Q = jnp.matmul(L, jnp.swapaxes(L, -1, -2), precision=jax.lax.Precision.HIGHEST)
        pi = floor_and_normalize(jax.nn.softmax(self.pi_logits, axis=-1))
        return Params(Ab=self.Ab, Q=Q, pi=pi, betas=betas)


def _loss(u: UnconstrainedParams, x, mask, betas, prior_kw, scale, num_frames):
    """`-(scale * log p(x | params) + log p(params | betas)) / num_frames`."""
    p = u.to_params(betas)
    mll = stable_marginal_log_likelihood(x, mask, p.Ab, p.Q, p.pi)
    if scale is not None:  # the batch's marginal log-likelihood, scaled to estimate the full data's
        mll = scale * mll
    return -(mll + log_prior(p.Ab, p.Q, p.pi, p.betas, **prior_kw)) / num_frames


@eqx.filter_jit
def _fit_gradient(model: ARHMM, x, mask, optimizer, key, num_steps: int, batch_size):
    hp, p = model.hyperparams, model.params
    dtype = p.Ab.dtype
    prior_kw = hp.prior_kwargs(dtype)
    num_frames = jnp.sum(mask[:, hp.nlags :])
    N = x.shape[0]
    optimizer = optax.with_extra_args_support(optimizer)
    u = UnconstrainedParams.from_params(p)
    # optax's internals mix dtypes (e.g. float ** int32 step counts); keep them working when
    # the caller has set jax_numpy_dtype_promotion="strict".
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(u)

    def step(carry, i):
        u, opt_state = carry
        if batch_size is None:
            xb, mb, scale = x, mask, None
        else:
            idx = jr.choice(jr.fold_in(key, i), N, (batch_size,), replace=False)
            xb, mb, scale = x[idx], mask[idx], jnp.asarray(N / batch_size, dtype)
        value_fn = lambda v: _loss(v, xb, mb, p.betas, prior_kw, scale, num_frames)
        loss, grads = eqx.filter_value_and_grad(value_fn)(u)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, u, value=loss, grad=grads, value_fn=value_fn)
        return (eqx.apply_updates(u, updates), opt_state), loss

    (u, _), losses = lax.scan(step, (u, opt_state), jnp.arange(num_steps, dtype=jnp.int32))
    params = u.to_params(p.betas)
    z = viterbi_paths(x, mask, params.Ab, params.Q, params.pi, fill_value=None)
    return ARHMM(hp, params, States(z=z)), losses


def fit_gradient(
    model: ARHMM,
    x: DataArray,
    mask: MaskArray,
    optimizer: optax.GradientTransformation,
    *,
    num_steps: int,
    key: PRNGKeyArray | None = None,
    batch_size: int | None = None,
) -> tuple[ARHMM, Float[Array, " num_steps"]]:
    """Maximum-a-posteriori fit of `Ab`, `Q` and `pi` by a gradient-based optax optimiser.

    Minimises `-model.log_posterior(x, mask) / (number of valid frames)` over the
    `UnconstrainedParams` of the model (`betas` held fixed), starting from `model`'s
    parameters: the same objective as `fit_em`. The steps run as one compiled `lax.scan`.

    **Arguments:**

    - `model`: the starting point (a prior draw, a Gibbs sample or an EM fit).
    - `x`: trajectories, shape `(N, T, D)`; `mask`: `(N, T)`, 1 for valid frames.
    - `optimizer`: any optax optimiser, e.g. `optax.adam(1e-2)`. It is called with the
      extra arguments `value`, `grad` and `value_fn`, so line-search methods such as
      `optax.lbfgs()` work too (with full batches). A new optimiser object recompiles.
    - `num_steps`: number of optimiser steps.
    - `key`: a `jax.random.key`, needed only with `batch_size` (step `i` draws its batch
      with `fold_in(key, i)`).
    - `batch_size`: sequences per step, drawn without replacement; the batch's marginal
      log-likelihood is scaled by `N / batch_size` (an unbiased estimate). `None`: all.

    **Returns:** `(fitted, losses)`: an `ARHMM` whose `states` are the most likely path,
    so it can seed `run_chain` or `fit_em`; and the loss before each step, shape `(num_steps,)`.
    """
    hp = model.hyperparams
    if hp.num_groups is not None:
        raise ValueError("`fit_gradient` takes models without groups (`hyperparams.num_groups` is None); fit a "
                         "model with per-group transition matrices by Gibbs sampling (`run_chain`, `fit`).")
    if hp.robust is not None:
        raise ValueError("`fit_gradient` fits Gaussian AR noise; this model has robust (Student-t) noise "
                         "(`hyperparams.robust` is set). Fit it by Gibbs sampling (`run_chain`, `fit`).")
    num_steps = check_int("num_steps", num_steps)
    x, mask = check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    N = x.shape[0]
    batch_size = check_int("batch_size", batch_size, maximum=N, allow_none=True)
    if batch_size is not None:
        if key is None:
            raise ValueError("`key` is required with `batch_size` (it draws the batches): pass `key=jr.key(0)`.")
        if batch_size == N:
            batch_size = None
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"`optimizer` must be an optax optimiser, e.g. `optax.adam(1e-2)`; got {type(optimizer)}.")
    dtype = model.params.Ab.dtype
    return _fit_gradient(model, x.astype(dtype), mask.astype(dtype), optimizer, key, num_steps, batch_size)
