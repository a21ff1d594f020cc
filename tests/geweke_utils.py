"""Machinery of the joint-distribution (Geweke 2004) tests: simulators of the generative model,
test functions, and z-scores of marginal-conditional against successive-conditional means.

Geweke, "Getting it right: joint distribution tests of posterior simulators", JASA 2004.
The marginal-conditional simulator draws independent `(params, z, x)` from the model; the
successive-conditional simulator alternates the sampler's conditional(s) with a fresh draw
of the data given the current parameters. Both have the model's joint as their
distribution if and only if the conditionals are right, so every test function must have
the same mean under both.

The successive-conditional draws come from `NUM_CHAINS` chains run side by side (one
vmapped program), each started from its own draw of the joint, so each is stationary from its
first step and no burn-in is needed; on a CPU the side-by-side chains cost little more per
step than one, so the same number of draws takes a fraction of the time of one long chain.

Masked frames are not part of the model: their `x` is independent standard-normal noise,
so a conditional that reads them changes the joint and is caught. Their states are: the
chain runs through every gap, and its transitions count up to the last valid frame of a
sequence (model.md, "Masking").
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import lax

from arhmm_eqx._linalg import cholesky, solve_lower, solve_lower_transposed


# Bonferroni-style threshold on |z|. Under the null each z is close to a t variable with
# 49 degrees of freedom (50 batch means), for which P(|t| > 4) ~ 2e-4; over ~12 test
# functions a correct sampler fails a given seed with probability ~ 3e-3 (the seeds are
# fixed, so the outcome is deterministic).
Z_MAX = 4.0
NUM_BATCHES = 50
# Successive-conditional chains run side by side; their batch means are pooled, so
# NUM_BATCHES must be a multiple of it.
NUM_CHAINS = 5


def simulate_z(key, pi, num_sequences: int, Tz: int):
    """`z[n, 0]` uniform over the `K` states, then `z[n, t] ~ pi[z[n, t-1]]`; shape `(N, Tz)`, int32."""
    K = pi.shape[0]
    key_first, key_path = jr.split(key)
    z0 = jr.randint(key_first, (num_sequences,), 0, K, dtype=jnp.int32)
    log_pi = jnp.log(pi)

    def step(z_prev, k):
        z_new = jr.categorical(k, log_pi[z_prev], axis=-1).astype(jnp.int32)
        return z_new, z_new

    _, zs = lax.scan(step, z0, jr.split(key_path, Tz - 1))
    return jnp.concatenate([z0[:, None], zs.T], axis=1)


def simulate_x(key, z, Ab, Q, mask, tau=None):
    """`x` given `z`, `Ab`, `Q` (model.md): `L` standard-normal initial lags, then
    `x[t] ~ Normal(Ab[z] [x[t-L], ..., x[t-1], 1], Q[z])`. Masked frames are independent
    standard-normal noise (they are outside the model), drawn inside the recursion: a masked
    frame of an interior gap is the recorded lag of the valid frames after it, as the model
    conditions on it. (For trailing padding this is the same as replacing the padding
    afterwards.) With `tau` `(N, Tz)` (robust noise), frame `t`'s noise covariance is
    `Q[z] / tau[t]`. Shape `(N, T, D)`."""
    N, Tz = z.shape
    K, D, A = Ab.shape
    L = (A - 1) // D
    key_lags, key_eps, key_pad = jr.split(key, 3)
    lags0 = jr.normal(key_lags, (N, L, D), Ab.dtype)
    eps = jr.normal(key_eps, (N, Tz, D), Ab.dtype)
    if tau is not None:
        eps = eps * lax.rsqrt(tau)[..., None]
    pad = jr.normal(key_pad, (N, Tz + L, D), Ab.dtype)
    valid = mask > 0
    lags0 = jnp.where(valid[:, :L, None], lags0, pad[:, :L])
    chol = cholesky(Q)  # the library's loop, not LAPACK (whose batched calls could stall jaxlib 0.10)
    one = jnp.ones((1,), Ab.dtype)

    def one_sequence(lags, z_n, eps_n, pad_n, valid_n):
        def step(lags, inputs):
            k, e, noise, ok = inputs
            u = jnp.concatenate([lags.reshape(-1), one])  # oldest lag first, bias last
            x_t = jnp.where(ok, Ab[k] @ u + chol[k] @ e, noise)
            return jnp.concatenate([lags[1:], x_t[None]], axis=0), x_t

        _, xs = lax.scan(step, lags, (z_n, eps_n, pad_n, valid_n))
        return jnp.concatenate([lags, xs], axis=0)

    return jax.vmap(one_sequence)(lags0, z, eps, pad[:, L:], valid[:, L:])


def trailing_mask(num_sequences: int, num_frames: int, num_padded: int):
    """All frames valid except the last `num_padded` frames of sequence 0 (float64)."""
    mask = jnp.ones((num_sequences, num_frames), jnp.float64)
    return mask.at[0, num_frames - num_padded :].set(0.0)


# ---------------------------------------------------------------------------------------
# Test functions (all with finite moments of every order under the prior, even with the
# default nu_0 = D + 2, where Q itself has no variance).


def ar_functions(Ab, Q, S_0, M_0, K_0_scale, states=(0,)):
    """For each state `k` in `states`: `W = chol(Q_k)^{-1} (Ab_k - M_0)`, which is
    `MatrixNormal(0, I, K_0)` under the prior whatever `Q_k` is; its lag-0 and bias entries,
    the mean of its squares over `K_0_scale` (mean 1 under the prior), `log det Q_k`, and
    `tr(S_0 Q_k^{-1})` (a Wishart trace, mean `nu_0 D` under the prior)."""
    out = {}
    for k in states:
        L_Q = cholesky(Q[k])
        W = solve_lower(L_Q, Ab[k] - M_0)
        out[f"W[{k}]_lag"] = W[0, 0]
        out[f"W[{k}]_bias"] = W[0, -1]
        out[f"W[{k}]_sq"] = jnp.mean(W**2) / K_0_scale
        out[f"logdetQ[{k}]"] = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L_Q)))
        out[f"trS0Qinv[{k}]"] = jnp.trace(solve_lower_transposed(L_Q, solve_lower(L_Q, S_0)))
    return out


def state_functions(z, mask, nlags: int, state: int = 0, padded: bool = False):
    """Usage of `state` over valid frames and the number of valid state switches (and,
    with `padded`, the number of switches into padded frames)."""
    valid = mask[:, nlags:] > 0
    valid_trans = mask[:, nlags + 1 :] > 0
    f64 = jnp.float64
    switch = z[:, 1:] != z[:, :-1]
    out = {
        f"usage[{state}]": jnp.sum(valid & (z == state), dtype=f64) / jnp.sum(valid, dtype=f64),
        "switches": jnp.sum(valid_trans & switch, dtype=f64),
    }
    if padded:
        # The chain runs on through padded frames with no emissions: z there follows pi alone.
        out["switches_padded"] = jnp.sum(~valid_trans & switch, dtype=f64)
    return out


def data_functions(x, mask, nlags: int):
    """`log` of the mean squared valid frame (a second moment of `x` with finite moments)."""
    valid = mask[:, nlags:] > 0
    sq = jnp.sum(x[:, nlags:] ** 2, axis=-1)
    return {"log_mean_x2": jnp.log(jnp.sum(jnp.where(valid, sq, 0.0)) / jnp.sum(valid, dtype=sq.dtype))}


# ---------------------------------------------------------------------------------------
# Statistics.


def geyer_ess(trace) -> float:
    """Effective sample size by Geyer's initial positive sequence estimator."""
    x = np.asarray(trace, np.float64)
    n = x.size
    x = x - x.mean()
    var = x.var()
    if var == 0.0:
        return float(n)
    f = np.fft.rfft(x, 2 * n)
    acov = np.fft.irfft(f * np.conj(f))[:n] / n
    rho = acov / acov[0]
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    positive = np.nonzero(pairs <= 0)[0]
    m = positive[0] if positive.size else pairs.size
    tau = -1.0 + 2.0 * np.sum(pairs[:m])
    return float(n / max(tau, 1e-12))


def _chains(trace) -> np.ndarray:
    """A successive-conditional trace as `(chains, draws)` (one chain when it is 1-D)."""
    x = np.asarray(trace, np.float64)
    return x[None] if x.ndim == 1 else x


def chains_ess(trace) -> float:
    """Effective sample size of a `(chains, draws)` trace: the sum of the chains' Geyer ESS."""
    return float(sum(geyer_ess(chain) for chain in _chains(trace)))


def chains_batch_means_se(trace, num_batches: int = NUM_BATCHES) -> float:
    """Standard error of the overall mean of a `(chains, draws)` trace by batch means:
    `num_batches / chains` non-overlapping batches within each chain, pooled."""
    x = _chains(trace)
    per_chain = num_batches // x.shape[0]
    b = x.shape[1] // per_chain
    means = x[:, : b * per_chain].reshape(x.shape[0] * per_chain, b).mean(axis=1)
    return float(means.std(ddof=1) / np.sqrt(means.size))


def geweke_zscores(mc: dict, sc: dict) -> dict:
    """`z = (mean_mc - mean_sc) / sqrt(se_mc^2 + se_sc^2)` for every test function.

    `se_mc` is the iid standard error; `se_sc` the larger of the batch-means and the
    Geyer-ESS standard errors (the successive-conditional draws are autocorrelated; `sc`
    holds `(chains, draws)` traces, or one chain's 1-D trace).
    Returns `{name: (z, mean_mc, mean_sc, ess_sc)}`.
    """
    out = {}
    for name in mc:
        a = np.asarray(mc[name], np.float64)
        b = _chains(sc[name])
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            out[name] = (np.inf, a.mean(), b.mean(), 0.0)
            continue
        se_mc = a.std(ddof=1) / np.sqrt(a.size)
        ess = chains_ess(b)
        se_sc = max(chains_batch_means_se(b), b.std(ddof=1) / np.sqrt(ess))
        z = (a.mean() - b.mean()) / np.sqrt(se_mc**2 + se_sc**2)
        out[name] = (float(z), float(a.mean()), float(b.mean()), ess)
    return out


def print_zscores(title: str, table: dict, num_mc: int, num_sc: int) -> float:
    """Print the z-scores (visible with `pytest -s`) and return `max |z|`."""
    print(f"\n[geweke] {title}: {num_mc} marginal-conditional, {num_sc} successive-conditional draws")
    for name, (z, m_mc, m_sc, ess) in table.items():
        print(f"  {name:>16s}  z = {z:+7.2f}   mean mc {m_mc:+.4f}  sc {m_sc:+.4f}   ess_sc {ess:8.0f}")
    return max(abs(v[0]) for v in table.values())


def to_numpy(tree: dict) -> dict:
    return {k: np.asarray(v) for k, v in tree.items()}


_MC_BATCH = 256


def marginal_conditional(key, prior_draw, functions, num_mc: int):
    """Geweke's marginal-conditional simulator: `num_mc` independent `prior_draw(key) -> state`
    (a pytree), through `functions(state) -> {name: scalar}`. Returns the values as numpy
    arrays and the first `NUM_CHAINS` draws, stacked on a leading axis (the starting points
    of the successive-conditional chains)."""

    @jax.jit
    def run(k):
        # `lax.map` in batches, not one vmap over all draws: jaxlib 0.10's CPU LAPACK kernels
        # split a large enough batch (batch x cost >= 2e5 flops) over the intra-op thread pool
        # and block until it is done, so two such calls running at once on a 2-thread pool
        # wait for each other forever. Batches of 256 small matrices stay under that size.
        def one(key):
            state = prior_draw(key)
            return functions(state), state

        values, states = jax.lax.map(one, jr.split(k, num_mc), batch_size=_MC_BATCH)
        return values, jax.tree.map(lambda a: a[:NUM_CHAINS], states)

    values, first = run(key)
    return to_numpy(values), first


def successive_conditional(key, starts, step, functions, num_sc: int) -> dict:
    """Geweke's successive-conditional simulator: chains from each of `starts` (draws from
    the model stacked on a leading axis, as `marginal_conditional` returns them), side by
    side, `num_sc` draws in all, each chain applying `step(key, state)` (the conditional(s)
    under test, then fresh data given the new parameters). One `lax.scan` of the vmapped
    step; chain `c`'s key at step `i` is `fold_in(fold_in(key, c), i)`. Returns
    `{name: (chains, num_sc // chains)}`.

    It builds a new jitted closure at every call, so module attributes monkeypatched
    before the call are what gets traced."""
    num_chains = jax.tree.leaves(starts)[0].shape[0]
    chain_keys = jax.vmap(lambda c: jr.fold_in(key, c))(jnp.arange(num_chains))

    @jax.jit
    def run(states):
        def body(states, i):
            states = jax.vmap(lambda k, s: step(jr.fold_in(k, i), s))(chain_keys, states)
            return states, jax.vmap(functions)(states)

        traces = lax.scan(body, states, jnp.arange(num_sc // num_chains))[1]
        return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), traces)

    return to_numpy(run(starts))
