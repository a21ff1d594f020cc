"""MAP-EM: expected sufficient statistics from the smoothed posterior, closed-form M-step, `fit_em`.

The objective is `log_posterior = log p(x | Ab, Q, pi) + log p(Ab, Q, pi | betas)` of
`_log_posterior.py`, with `betas` held fixed (they enter only through the prior of `pi`;
in the sampler they are updated through the auxiliary table counts, which have no
closed-form MAP counterpart, so EM keeps the `betas` it is given).

**E-step.** For every sequence, the forward filter and a normalised backward pass give
the smoothed marginals `gamma[t, k] = p(z[t] = k | x)` and the expected transition counts
`sum_t p(z[t-1] = i, z[t] = j | x)`. Which transitions are counted follows the marginal
likelihood that `marginal_log_likelihood` computes (the chain runs through masked frames),
so that EM is exact for it: every transition up to the last valid frame of the sequence
counts, including those into masked frames of a gap (the posterior bridges the gap);
transitions into the trailing padding carry no information and are dropped. This is the
rule of model.md, "Masking", which the sampler's counts and `log p(z)` follow too
(`_transitions.transition_weights`). The expected AR statistics are those of
model.md §2 with each valid frame weighted by `gamma[t, k]` instead of a one-hot label.

**M-step.** `(Ab[k], Q[k])` is the joint mode of the MNIW posterior given the expected
statistics: `Ab = M_n` and `Q = S_n / (nu_n + D + 1 + A)` (the `A` comes from the matrix
normal's `|Q|^{-A/2}`). Row `i` of `pi` is the mode of `Dirichlet(n[i] + c_i)` with the
floored concentrations `c_i >= 1` of `_log_posterior.py`: `(n[i] + c_i - 1) / sum`, which
is well defined because every exponent `n + c - 1` is `>= 0` (a row whose exponents are all
0 gets the uniform distribution, which is then one of the maximisers), then floored at the
dtype's `tiny` as the sampler does so that `log pi` stays finite.

Each E-step plus M-step does not decrease `log_posterior` (the EM argument; tested in float64).

**Loop.** `fit_em` runs the iterations as one `lax.while_loop` rather than a Python loop
over a jitted step: one compilation, no host round trip per iteration, and a fit that
`eqx.filter_vmap` can batch over restarts or hyperparameters. The price is no progress
output while it runs; `EMInfo` holds the trace. Memory: the E-step holds a few `(N, Tz, K)`
arrays (log-likelihoods, filtered and backward messages, marginals), about 80 MiB for
`N = 10, T = 10^4, K = 50` in float32.
"""

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._ar import ar_log_likelihoods, chunk_size, mniw_posterior_joint
from ._checks import check_data, check_int, validate_data
from ._custom_types import Array, Bool, DataArray, Float, Int, MaskArray
from ._inference import forward_backward, viterbi_paths
from ._lags import augmented_regressors
from ._linalg import PRECISION, psd_cholesky, solve_lower_transposed
from ._log_posterior import dirichlet_concentrations, log_prior
from ._model import ARHMM, check_states_fit_data
from ._params import Params
from ._states import States
from ._transitions import floor_and_normalize, transition_weights


def expected_ar_stats(
    x: Float[Array, "N T D"], mask: Float[Array, "N T"], gamma: Float[Array, "N Tz K"], *, nlags: int
) -> Float[Array, "K AD AD"]:
    """`sum_t gamma[t, k] mask[t] v_t v_t^T` per state, `v_t = [lags, 1, x[t]]` (as `ar_sufficient_stats`).

    Only the upper triangle of each outer product is formed (the matrices are symmetric),
    and one matrix product `(K, frames) @ (frames, (A+D)(A+D+1)/2)` per chunk of frames (a
    scan) sums it, so the products of only one chunk (about 2**22 numbers) exist at a time.
    """
    N, T, D = x.shape
    K = gamma.shape[-1]
    v = augmented_regressors(x, nlags)
    AD = v.shape[-1]
    rows, cols = np.triu_indices(AD)
    P = rows.size
    M = N * (T - nlags)
    valid = (mask[:, nlags:] > 0).reshape(M, 1)
    v = jnp.where(valid, v.reshape(M, AD), jnp.zeros((), v.dtype))  # select: masked rows never enter
    w = jnp.where(valid, gamma.reshape(M, K), jnp.zeros((), gamma.dtype))
    C = chunk_size(P, M)
    num_chunks = -(-M // C)
    pad = num_chunks * C - M
    v = jnp.pad(v, ((0, pad), (0, 0))).reshape(num_chunks, C, AD)
    w = jnp.pad(w, ((0, pad), (0, 0))).reshape(num_chunks, C, K)

    def step(acc, inputs):
        v_c, w_c = inputs
        return acc + jnp.matmul(w_c.T, v_c[:, rows] * v_c[:, cols], precision=PRECISION), None

    acc, _ = lax.scan(step, jnp.zeros((K, P), x.dtype), (v, w))
    # Mirror the triangle: entries (i, j) and (j, i) both take acc's value; the diagonal once.
    lower = jnp.zeros((K, AD, AD), x.dtype).at[:, cols, rows].set(acc)
    return lower.at[:, rows, cols].set(acc)


def expected_stats(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"],
) -> tuple[Float[Array, ""], Float[Array, "K AD AD"], Float[Array, "K K"]]:
    """E-step. **Returns:** `(log p(x | Ab, Q, pi), expected AR statistics, expected transition counts)`."""
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    ll = ar_log_likelihoods(x, mask, Ab, Q)
    w = transition_weights(mask, nlags).astype(mask.dtype)
    log_norms, gamma, xi = jax.vmap(forward_backward, in_axes=(0, None, 0))(ll, pi, w)
    return jnp.sum(log_norms), expected_ar_stats(x, mask, gamma, nlags=nlags), jnp.sum(xi, axis=0)


def mniw_mode(
    stats: Float[Array, "K AD AD"],
    *,
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
) -> tuple[Float[Array, "K D A"], Float[Array, "K D D"]]:
    """Joint mode of the MNIW posterior given (soft) statistics: `Ab = M_n`, `Q = S_n / (nu_n + D + 1 + A)`.

    `M_n` and `S_n` come from one Cholesky factor of the joint matrix `G` of
    `mniw_posterior_joint` (as in `_distributions.sample_mniw_from_joint`), which avoids
    the cancellation in `S_n = C - M_n K_n^{-1} M_n^T`.
    """
    D, A = M_0.shape
    G, nu_n = mniw_posterior_joint(stats, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0)
    L = psd_cholesky(G)
    L_P, B, L_S = L[:, :A, :A], L[:, A:, :A], L[:, A:, A:]
    # M_n L_P = B  <=>  L_P^T M_n^T = B^T
    Ab = jnp.swapaxes(solve_lower_transposed(L_P, jnp.swapaxes(B, -1, -2)), -1, -2)
    S_n = jnp.matmul(L_S, jnp.swapaxes(L_S, -1, -2), precision=PRECISION)
    Q = S_n / (nu_n + (D + 1 + A))[:, None, None]
    return Ab, Q


def transition_mode(
    counts: Float[Array, "K K"], betas: Float[Array, " K"], alpha: Float[Array, ""], kappa: Float[Array, ""]
) -> Float[Array, "K K"]:
    """Mode of `Dirichlet(counts[i] + c_i)` per row with the floored concentrations (module docstring)."""
    expo = counts + dirichlet_concentrations(betas, alpha, kappa) - 1
    row = jnp.sum(expo, axis=-1, keepdims=True)
    expo = jnp.where(row > 0, expo, jnp.ones((), expo.dtype))
    return floor_and_normalize(expo)


def em_update(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"],
    betas: Float[Array, " K"],
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
) -> tuple[Float[Array, ""], tuple[Float[Array, "K D A"], Float[Array, "K D D"], Float[Array, "K K"]]]:
    """One E-step and M-step. **Returns:** `(log p(x | Ab, Q, pi) at the input, (Ab, Q, pi) updated)`."""
    mll, ar_stats, counts = expected_stats(x, mask, Ab, Q, pi)
    Ab_new, Q_new = mniw_mode(ar_stats, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0)
    return mll, (Ab_new, Q_new, transition_mode(counts, betas, alpha, kappa))


class EMInfo(eqx.Module):
    """What `fit_em` did. Traces have `max_iters + 1` entries; entry `i` is for the
    parameters after `i` M-steps, and entries after `num_iters` are NaN.

    - `log_posterior`: `log p(x | params) + log p(params | betas)` (never decreases, up to rounding).
    - `marginal_log_likelihood`: `log p(x | params)`.
    - `num_iters`: M-steps taken; the returned model is the one after them.
    - `converged`: whether the last step raised the log posterior by less than `tol` per valid frame.
    """

    log_posterior: Float[Array, " I"]
    marginal_log_likelihood: Float[Array, " I"]
    num_iters: Int[Array, ""]
    converged: Bool[Array, ""]


@eqx.filter_jit
def _fit_em(model: ARHMM, x, mask, tol, max_iters: int, most_likely_states: bool):
    hp, p = model.hyperparams, model.params
    dtype = p.Ab.dtype
    x, mask = check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    x, mask = x.astype(dtype), mask.astype(dtype)
    kw = hp.prior_kwargs(dtype)
    betas = p.betas
    threshold = tol.astype(dtype) * jnp.sum(mask[:, hp.nlags :])
    nan = jnp.full((max_iters + 1,), jnp.nan, dtype)

    def cond(carry):
        return ~carry[-1]

    def body(carry):
        i, params, trace_lp, trace_mll, _, _ = carry
        Ab, Q, pi = params
        mll, new = em_update(x, mask, Ab, Q, pi, betas, **kw)
        lp = mll + log_prior(Ab, Q, pi, betas, **kw)
        prev = trace_lp[jnp.maximum(i - 1, 0)]
        converged = (i > 0) & (lp - prev < threshold)
        stop = converged | (i >= max_iters)
        params = jax.tree.map(lambda old, upd: jnp.where(stop, old, upd), params, new)
        return i + 1, params, trace_lp.at[i].set(lp), trace_mll.at[i].set(mll), converged, stop

    init = (jnp.zeros((), jnp.int32), (p.Ab, p.Q, p.pi), nan, nan, jnp.zeros((), bool), jnp.zeros((), bool))
    i, (Ab, Q, pi), trace_lp, trace_mll, converged, _ = lax.while_loop(cond, body, init)
    states = States(z=viterbi_paths(x, mask, Ab, Q, pi, fill_value=None)) if most_likely_states else model.states
    fitted = ARHMM(hp, Params(Ab=Ab, Q=Q, pi=pi, betas=betas), states)
    return fitted, EMInfo(trace_lp, trace_mll, i - 1, converged)


def fit_em(
    model: ARHMM,
    x: DataArray,
    mask: MaskArray,
    *,
    max_iters: int = 100,
    tol: float | np.floating = 1e-5,
    most_likely_states: bool = True,
) -> tuple[ARHMM, EMInfo]:
    """Maximum-a-posteriori fit of `Ab`, `Q` and `pi` by EM, starting from `model`'s parameters.

    Maximises `model.log_posterior(x, mask)` (marginal log-likelihood plus the log prior;
    see `_log_posterior.py` for the prior of `pi`) with `betas` held fixed. Every
    iteration is an E-step (smoothed marginals and expected transition counts) and a
    closed-form M-step; the whole loop is one compiled `lax.while_loop`, so `fit_em` can be
    vmapped over restarts (`eqx.filter_vmap`). `model` may be a prior draw or a Gibbs sample.

    **Arguments:**

    - `model`: the starting point (its `states` are used only with `most_likely_states=False`).
    - `x`: trajectories, shape `(N, T, D)`; `mask`: `(N, T)`, 1 for valid frames.
    - `max_iters`: most M-steps to take (static: the traces have `max_iters + 1` entries).
    - `tol`: stop when one iteration raises the log posterior by less than `tol` per valid
      frame (also when it lowers it, which only rounding can do). In float32, values below
      about `1e-6` are under the rounding of the log posterior and run to `max_iters`.
    - `most_likely_states`: end with a Viterbi pass, so that the fitted model's states are
      the most likely path. It costs about as much as a few EM iterations at large `K`;
      with False the fitted model keeps `model.states` (which must then fit `x`), for when
      only the parameters are wanted.

    **Returns:** `(fitted, info)`: an `ARHMM` with the fitted parameters, the given `betas`,
    and `states` the most likely path (`most_likely_states(..., fill_value=None)`), so it can
    seed `run_chain` (or `model.states` with `most_likely_states=False`); and an `EMInfo`.
    """
    hp = model.hyperparams
    max_iters = check_int("max_iters", max_iters)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"`tol` must be a number >= 0 (an improvement per valid frame); got {tol!r}.")
    if not isinstance(most_likely_states, bool):
        raise TypeError(f"`most_likely_states` must be True or False; got {most_likely_states!r}.")
    model.check()
    if hp.num_groups is not None:
        raise ValueError("`fit_em` takes models without groups (`hyperparams.num_groups` is None); fit a model "
                         "with per-group transition matrices by Gibbs sampling (`run_chain`, `fit`).")
    if hp.robust is not None:
        raise ValueError("`fit_em` fits Gaussian AR noise; this model has robust (Student-t) noise "
                         "(`hyperparams.robust` is set). Fit it by Gibbs sampling (`run_chain`, `fit`).")
    x, mask = validate_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)  # on the host; no JAX operation
    if not most_likely_states:
        check_states_fit_data(model.states.z, x, hp.nlags)
    return _fit_em(model, x, mask, np.asarray(float(tol)), max_iters, most_likely_states)
