"""Simulation-based calibration (Talts et al. 2018) of the whole Gibbs sampler on a tiny model.

For each replication, `(params, z)` are drawn from the prior and `x` from the model; the
sampler then runs from that TRUE state. The rank of a label-invariant statistic of the
truth among the statistics of the draws must be uniform when every conditional is right.

Why the chain is run both forwards and backwards: a chain started at the truth is
stationary (the truth is an exact posterior draw given `x`), but its draws are correlated
with the truth, so the truth placed at the START of the trajectory is not exchangeable with
the draws and its rank is not uniform (a slowly moving chain puts the truth at an end of
the range). The exact fix: pick a position `J` uniform in `0..S`, run `J` steps of the
time-reversed kernel and `S - J` steps of the forward kernel from the truth. The whole
trajectory is then a stationary chain of `S + 1` states whose law does not depend on `J`,
with the truth at the independent uniform position `J`, so its rank is exactly uniform
whatever the mixing. The forward sweep is transitions -> AR -> states, and each block is a
Gibbs update (reversible), so the reversed sweep is states -> AR -> transitions.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats
from jax import lax

import arhmm_eqx as ae
import arhmm_eqx._gibbs as gibbs_module
from arhmm_eqx._inference import marginal_log_likelihood
from arhmm_eqx._initialize import init_params
from arhmm_eqx._model import sweep


K, D, L_AR, N, T = 2, 1, 1, 2, 24
NUM_PADDED = 4  # trailing masked frames of sequence 0 (masking rules are part of the contract)
NUM_REPS = 400
NUM_DRAWS = 19  # draws per replication (S); with the truth, 20 positions -> 10 rank bins of 2
THIN = 1  # sweeps per kept draw (thinning would add power, not validity: see the docstring)
NUM_BINS = 10
P_MIN = 1e-3  # family-wise threshold, Bonferroni-divided over the statistics


def _hyperparams():
    """A prior under which 24-frame trajectories stay bounded: AR coefficient ~ N(0.5, 0.1 Q),
    `Q ~ InvWishart(6, 4)` (mean 1, light tails), bias ~ N(0, 0.1 Q)."""
    f64 = jnp.float64
    return ae.Hyperparams(
        num_states=K, latent_dim=D, nlags=L_AR,
        alpha=jnp.asarray(2.0, f64), gamma=jnp.asarray(2.0, f64), kappa=jnp.asarray(2.0, f64),
        nu_0=jnp.asarray(6.0, f64), S_0=4.0 * jnp.eye(D, dtype=f64),
        M_0=jnp.asarray([[0.5, 0.0]], f64), K_0=0.1 * jnp.eye(D * L_AR + 1, dtype=f64),
    )


def _mask():
    return jnp.ones((N, T), jnp.float64).at[0, T - NUM_PADDED :].set(0.0)


def _simulate(key, hp, mask):
    """Truth `(Ab, Q, betas, pi, z)` from the prior and `x` from model.md's generative model,
    written out here independently of the library's simulator."""
    key_params, key_z0, key_path, key_lags, key_eps, key_pad = jr.split(key, 6)
    Ab, Q, betas, pi = init_params(
        key_params, alpha=hp.alpha, gamma=hp.gamma, kappa=hp.kappa, nu_0=hp.nu_0, S_0=hp.S_0,
        M_0=hp.M_0, K_0=hp.K_0, num_states=K, dtype=jnp.float64,
    )
    Tz = T - L_AR
    z0 = jr.randint(key_z0, (N,), 0, K, dtype=jnp.int32)

    def z_step(z_prev, k):
        z_new = jr.categorical(k, jnp.log(pi[z_prev]), axis=-1).astype(jnp.int32)
        return z_new, z_new

    _, zs = lax.scan(z_step, z0, jr.split(key_path, Tz - 1))
    z = jnp.concatenate([z0[:, None], zs.T], axis=1)
    chol = jnp.linalg.cholesky(Q)
    eps = jr.normal(key_eps, (N, Tz, D), jnp.float64)
    lags0 = jr.normal(key_lags, (N, L_AR, D), jnp.float64)

    def one_sequence(lags, z_n, eps_n):
        def step(lags, inputs):
            k, e = inputs
            u = jnp.concatenate([lags.reshape(-1), jnp.ones((1,), jnp.float64)])  # oldest lag first, 1 last
            x_t = Ab[k] @ u + chol[k] @ e
            return jnp.concatenate([lags[1:], x_t[None]], axis=0), x_t

        _, xs = lax.scan(step, lags, (z_n, eps_n))
        return jnp.concatenate([lags, xs], axis=0)

    x = jax.vmap(one_sequence)(lags0, z, eps)
    # Masked frames are outside the model: fill them with unrelated noise.
    x = jnp.where(mask[..., None] > 0, x, jr.normal(key_pad, x.shape, jnp.float64))
    model = ae.ARHMM(hp, ae.Params(Ab=Ab, Q=Q, pi=pi, betas=betas), ae.States(z=z))
    return model, x


def _reverse_sweep(key, model, x, mask):
    """The time reversal of `gibbs_sweep`: the same three conditionals in the opposite order.
    The kernels are looked up in `_gibbs` at trace time, the module the forward sweep uses."""
    hp, p = model.hyperparams, model.params
    key_trans, key_ar, key_z = jr.split(key, 3)
    z, _, _ = gibbs_module.sample_stateseqs(key_z, x, mask, p.Ab, p.Q, p.pi)
    Ab, Q = gibbs_module.resample_ar_params(
        key_ar, x, mask, z, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0, num_states=K, nlags=L_AR
    )
    betas, pi = gibbs_module.resample_hdp_transitions(
        key_trans, z, mask, p.betas, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K, nlags=L_AR
    )
    return ae.ARHMM(hp, ae.Params(Ab=Ab, Q=Q, pi=pi, betas=betas), ae.States(z=z))


def _forward_sweep(key, model, x, mask):
    return sweep(key, model, x, mask)[0]


def _statistics(model, x, mask):
    """Label-invariant scalar functions of `(params, z)` (and the data)."""
    p, z = model.params, model.states.z
    valid = mask[:, L_AR:] > 0
    valid_trans = mask[:, L_AR + 1 :] > 0
    Q = p.Q[:, 0, 0]
    a, b = p.Ab[:, 0, 0], p.Ab[:, 0, 1]
    # log p(x | z, Ab, Q) over valid frames, written out for D = 1, L = 1
    mean = a[z] * x[:, :-1, 0] + b[z]
    log_px = -0.5 * ((x[:, 1:, 0] - mean) ** 2 / Q[z] + jnp.log(2 * jnp.pi * Q[z]))
    usage = jnp.stack([jnp.sum(valid & (z == k)) for k in range(K)]).astype(jnp.float64)
    return {
        "sum_Q": jnp.sum(Q),
        "min_Q": jnp.min(Q),
        "sum_ar_coef": jnp.sum(a),
        "sum_bias_sq": jnp.sum(b**2),
        "mean_pi_diag": jnp.mean(jnp.diagonal(p.pi)),
        "max_beta": jnp.max(p.betas),
        "log_marginal_x": marginal_log_likelihood(x, mask, p.Ab, p.Q, p.pi),
        "log_px_given_z": jnp.sum(jnp.where(valid, log_px, 0.0)),
        "switches": jnp.sum(valid_trans & (z[:, 1:] != z[:, :-1])).astype(jnp.float64),
        "max_usage": jnp.max(usage),
    }


def _one_replication(key, hp_sampler, mask):
    """Simulate, run the two chains from the truth, return the truth's rank per statistic."""
    hp_prior = _hyperparams()
    key_sim, key_fwd, key_bwd, key_pos, key_ties = jr.split(key, 5)
    truth, x = _simulate(key_sim, hp_prior, mask)
    start = ae.ARHMM(hp_sampler, truth.params, truth.states)

    def chain(sweep, key):
        def kept(m, k):
            m = lax.fori_loop(0, THIN, lambda i, m: sweep(jr.fold_in(k, i), m, x, mask), m)
            return m, _statistics(m, x, mask)

        return lax.scan(kept, start, jr.split(key, NUM_DRAWS))[1]

    fwd = chain(_forward_sweep, key_fwd)  # fwd[j]: j + 1 kernel steps after the truth
    bwd = chain(_reverse_sweep, key_bwd)  # bwd[j]: j + 1 steps before it
    J = jr.randint(key_pos, (), 0, NUM_DRAWS + 1)
    idx = jnp.arange(NUM_DRAWS)
    use_bwd, use_fwd = idx < J, idx < NUM_DRAWS - J
    true_stats = _statistics(truth, x, mask)
    ranks = {}
    for (name, t), k in zip(true_stats.items(), jr.split(key_ties, len(true_stats))):
        less = jnp.sum(use_bwd & (bwd[name] < t)) + jnp.sum(use_fwd & (fwd[name] < t))
        ties = jnp.sum(use_bwd & (bwd[name] == t)) + jnp.sum(use_fwd & (fwd[name] == t))
        # random tie-breaking (discrete statistics): uniform position among the equal values
        u = jr.uniform(k, (), jnp.float64)
        ranks[name] = less + jnp.floor(u * (ties + 1).astype(jnp.float64)).astype(less.dtype)
    return ranks


# Hyperparameters are array leaves, so the mutated runs below reuse this compilation.
_run_replications = jax.jit(jax.vmap(_one_replication, in_axes=(0, None, None)))


def _sbc_pvalues(key, **sampler_hyperparams):
    """Chi-square p-value of the uniformity of the ranks (in `NUM_BINS` bins), per statistic.
    `sampler_hyperparams` replace hyperparameters of the sampler only (mutation checks)."""
    with jax.enable_x64(True):
        hp_sampler = _hyperparams()
        for name, value in sampler_hyperparams.items():
            hp_sampler = eqx.tree_at(lambda h: getattr(h, name), hp_sampler, jnp.asarray(value, jnp.float64))
        mask = _mask()
        ranks = jax.device_get(_run_replications(jr.split(key, NUM_REPS), hp_sampler, mask))
    out = {}
    for name, r in ranks.items():
        r = np.asarray(r)
        assert r.min() >= 0 and r.max() <= NUM_DRAWS
        counts = np.bincount(r * NUM_BINS // (NUM_DRAWS + 1), minlength=NUM_BINS)
        out[name] = (float(scipy.stats.chisquare(counts).pvalue), counts)
    return out


@pytest.mark.slow
def test_sbc_ranks_uniform():
    results = _sbc_pvalues(jr.key(2024))
    threshold = P_MIN / len(results)
    report = {name: (p, counts.tolist()) for name, (p, counts) in results.items()}
    print(report)
    for name, (p, counts) in results.items():
        assert p > threshold, f"{name}: SBC ranks not uniform, p = {p:.2e}, counts {counts.tolist()}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "field, value, statistic",
    [("nu_0", 9.0, "sum_Q"), ("kappa", 8.0, "mean_pi_diag")],
    ids=["ar_conditional_nu0+3", "transition_conditional_kappa*4"],
)
def test_sbc_detects_wrong_conditional(field, value, statistic):
    """Mutation checks: the sampler run with a wrong hyperparameter in one conditional (the prior
    that made the truth used the right one) must give non-uniform ranks. `nu_0` is read only by
    the AR conditional and `kappa` only by the transition conditional; both go in as array
    leaves of the sampler's hyperparameters, so the compiled replication is shared."""
    results = _sbc_pvalues(jr.key(2024), **{field: value})
    pvalues = {name: p for name, (p, _) in results.items()}
    print(pvalues)
    assert min(pvalues.values()) < P_MIN / len(results), pvalues
    assert pvalues[statistic] < 1e-10, pvalues
