"""Recovery: simulate from a known sticky AR-HMM, fit with `run_chain`, match labels (Hungarian)."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import arhmm_eqx as ae
from arhmm_eqx._generate import simulate_dataset


K_TRUE, K_FIT, D, L, N, T = 3, 6, 2, 1, 4, 500
MEAN_DURATION = 30.0
NOISE_VAR = 0.02
NUM_SWEEPS = 150


def _rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def _true_model():
    """Three states with close fixed points but distinct dynamics: a slow counter-clockwise spiral,
    a clockwise one, and a fast decay. Sticky transitions with mean duration 30 frames."""
    A = [0.9 * _rotation(0.4), 0.9 * _rotation(-0.4), 0.5 * np.eye(D)]
    fixed_points = [np.array([0.6, 0.0]), np.array([-0.6, 0.0]), np.array([0.0, 0.6])]
    Ab = np.stack([np.concatenate([A[k], ((np.eye(D) - A[k]) @ fixed_points[k])[:, None]], 1) for k in range(K_TRUE)])
    Q = np.stack([NOISE_VAR * np.eye(D)] * K_TRUE)
    stay = 1.0 - 1.0 / MEAN_DURATION
    pi = np.full((K_TRUE, K_TRUE), (1.0 - stay) / (K_TRUE - 1))
    np.fill_diagonal(pi, stay)
    return Ab, Q, pi


@pytest.mark.slow
def test_recovery_of_states_and_dynamics():
    Ab_true, Q_true, pi_true = _true_model()
    z_true, x = simulate_dataset(
        jr.key(0), jnp.asarray(pi_true, jnp.float32), jnp.asarray(Ab_true, jnp.float32),
        jnp.asarray(Q_true, jnp.float32), N, T,
    )
    z_true = np.asarray(z_true)
    assert z_true.shape == (N, T - L)
    counts = np.bincount(z_true.ravel(), minlength=K_TRUE)
    assert np.all(counts > 200), counts  # every state well represented in the simulated data
    mask = jnp.ones((N, T))
    # kappa of the order of the number of transitions out of a state (~counts / duration * 10)
    hp = ae.Hyperparams.from_scales(K_FIT, D, L, kappa=300.0, S_0_scale=NOISE_VAR, K_0_scale=10.0)

    x64 = np.asarray(x, np.float64)
    u = np.concatenate([x64[:, :-1], np.ones((N, T - 1, 1))], axis=-1)  # regressors [x[t-1], 1]
    K_0_inv = np.linalg.inv(np.asarray(hp.K_0, np.float64))

    for restart in range(3):
        model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(10 + restart))
        model, info = ae.run_chain(jr.key(20 + restart), model, x, mask, NUM_SWEEPS)
        assert bool(info.ok.all())
        z_fit = np.asarray(model.states.z)

        confusion = np.zeros((K_TRUE, K_FIT))
        np.add.at(confusion, (z_true.ravel(), z_fit.ravel()), 1.0)
        rows, cols = optax.assignment.hungarian_algorithm(-jnp.asarray(confusion))
        rows, cols = np.asarray(rows), np.asarray(cols)
        assert sorted(rows.tolist()) == list(range(K_TRUE))
        accuracy = confusion[rows, cols].sum() / confusion.sum()
        assert accuracy >= 0.9, (restart, accuracy, confusion)

        # Dynamics of each matched state. Given (nearly) the true labels, Ab[k] is a draw from
        # MatrixNormal(M_n, Q, K_n); the draw minus the truth has standard deviation about
        # sqrt(2 Q_ii K_n_jj) (posterior spread plus the error of the posterior mean).
        Ab_fit, Q_fit = np.asarray(model.params.Ab, np.float64), np.asarray(model.params.Q, np.float64)
        for k, c in zip(rows, cols):
            in_k = z_true == k
            S_uu = np.einsum("ti,tj->ij", u[in_k], u[in_k])
            K_n = np.linalg.inv(K_0_inv + S_uu)
            sd = np.sqrt(2.0 * np.outer(np.diag(Q_true[k]), np.diag(K_n)))
            z_scores = (Ab_fit[c] - Ab_true[k]) / sd
            assert np.max(np.abs(z_scores)) < 5.0, (k, z_scores)
            # Q[k] ~ InvWishart(nu_0 + n_k, S_n): relative sd of a diagonal entry ~ sqrt(2 / n_k),
            # doubled for the same reason
            n_k = in_k.sum()
            q_scores = (np.diag(Q_fit[c]) - np.diag(Q_true[k])) / (np.diag(Q_true[k]) * np.sqrt(4.0 / n_k))
            assert np.max(np.abs(q_scores)) < 5.0, (k, q_scores)
