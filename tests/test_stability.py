"""Numerical stability of a float32 chain of 200 sweeps at low and extreme stickiness (a CI-sized
version of benchmarks/long_run_stability.py): no NaN/inf anywhere, every Q positive definite,
pi rows summing to 1 with positive entries, checked every 50 sweeps."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import arhmm_eqx as ae
from arhmm_eqx._generate import simulate_dataset


K, D, L, N, T = 20, 4, 2, 2, 2000
TRUE_STATES = 8
SWEEPS, CHUNK = 200, 50


def _data():
    """Frames from a random stable sticky AR-HMM with fewer states than the fitted model:
    dynamics 0.95 times a random rotation on the last lag, one bias per state, Q = 0.01 I."""
    k_rot, k_bias, k_sim = jr.split(jr.key(70), 3)
    G = 0.1 * jr.normal(k_rot, (TRUE_STATES, D, D))
    A_last = 0.95 * jax.vmap(jax.scipy.linalg.expm)(G - jnp.swapaxes(G, -1, -2))
    Ab = jnp.concatenate(
        [jnp.zeros((TRUE_STATES, D, D * (L - 1))), A_last, 0.3 * jr.normal(k_bias, (TRUE_STATES, D, 1))], axis=-1
    )
    Q = jnp.broadcast_to(0.01 * jnp.eye(D), (TRUE_STATES, D, D))
    stay = 0.95
    pi = jnp.full((TRUE_STATES, TRUE_STATES), (1 - stay) / (TRUE_STATES - 1))
    pi = pi + (stay - (1 - stay) / (TRUE_STATES - 1)) * jnp.eye(TRUE_STATES)
    _, x = simulate_dataset(k_sim, pi, Ab, Q, N, T)
    return x.astype(jnp.float32), jnp.ones((N, T), jnp.float32)


def _check(model, info, where):
    p = model.params
    for name, leaf in (("Ab", p.Ab), ("Q", p.Q), ("pi", p.pi), ("betas", p.betas),
                       ("log_joint_x", info.log_joint_x), ("log_joint_z", info.log_joint_z)):
        a = np.asarray(leaf)
        assert a.dtype == np.float32, f"{where}: {name} is {a.dtype}"
        assert np.all(np.isfinite(a)), f"{where}: {name} has {np.sum(~np.isfinite(a))} non-finite values"
    ok = np.asarray(info.ok)
    assert bool(np.all(ok)), f"{where}: GibbsInfo.ok False at sweeps {np.flatnonzero(~ok)}"
    chol = np.asarray(jnp.linalg.cholesky(p.Q))  # in float32, as the sampler factorises Q
    assert np.all(np.isfinite(chol)), f"{where}: Q fails a float32 Cholesky"
    min_eig = np.linalg.eigvalsh(np.asarray(p.Q, np.float64))[:, 0].min()
    assert min_eig > 0, f"{where}: min eigenvalue of Q {min_eig}"
    pi = np.asarray(p.pi, np.float64)
    assert np.abs(pi.sum(-1) - 1).max() <= 1e-5, f"{where}: pi rows sum to {pi.sum(-1)}"
    assert pi.min() > 0, f"{where}: pi has a zero entry"
    assert np.asarray(p.betas).min() >= 0, f"{where}: negative betas"
    z = np.asarray(model.states.z)
    assert z.dtype == np.int32 and z.min() >= 0 and z.max() < K


@pytest.mark.slow
@pytest.mark.parametrize("kappa", [1e2, 1e8])
def test_float32_chain_stays_finite_and_valid(kappa):
    x, mask = _data()
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=kappa)  # alpha 5.7, gamma 1e3, S_0 0.01 I, K_0 10 I
    key_init, key_chain = jr.split(jr.key(71))
    model = ae.ARHMM.from_prior(hp, x, mask, key=key_init)
    assert model.params.Ab.dtype == jnp.float32
    for start in range(0, SWEEPS, CHUNK):
        model, info = ae.run_chain(key_chain, model, x, mask, CHUNK, start_iter=start, throw=False)
        _check(model, info, f"kappa={kappa:.0e}, sweeps {start}-{start + CHUNK}")
    # the chain did fit something: more than one state in use
    assert np.unique(np.asarray(model.states.z)).size > 1
