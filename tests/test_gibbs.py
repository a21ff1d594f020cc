"""The Gibbs sweep itself (`_gibbs.gibbs_sweep`): the order of its blocks and the keys they get,
what `SweepOptions` change and what they leave alone, and the diagnostics it reports.

The sweep's law is tested statistically elsewhere (Geweke: `test_geweke.py`, SBC: `test_sbc.py`);
these tests pin down its wiring, exactly, on the suite's shared small problem.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SMALL_SIZES, small_walk

import arhmm_eqx as ae
from arhmm_eqx._ar import resample_ar_params
from arhmm_eqx._gibbs import SweepOptions, gibbs_sweep
from arhmm_eqx._inference import sample_stateseqs
from arhmm_eqx._log_prob import log_joint_likelihood
from arhmm_eqx._transitions import resample_hdp_transitions


K, D, L, N, T = SMALL_SIZES


@pytest.fixture(scope="module")
def problem():
    x, mask = small_walk()
    # a leading masked stretch and an interior gap on sequence 0, beside sequence 1's padding
    mask = mask.at[0, :5].set(0.0).at[0, 20:24].set(0.0)
    model = ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L, kappa=10.0), x, mask, key=jr.key(3))
    return model, x, mask


_sweep = jax.jit(gibbs_sweep, static_argnums=6)


def _by_hand(key, model, x, mask):
    """The blocks in model.md's order, each with its own named subkey."""
    hp, p = model.hyperparams, model.params
    key_trans, key_ar, key_z = jr.split(key, 3)
    betas, pi = resample_hdp_transitions(
        key_trans, model.states.z, mask, p.betas, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K, nlags=L
    )
    Ab, Q = resample_ar_params(
        key_ar, x, mask, model.states.z, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0, num_states=K, nlags=L
    )
    z, _, _ = sample_stateseqs(key_z, x, mask, Ab, Q, pi)
    return betas, pi, Ab, Q, z


def test_blocks_run_in_model_md_order_with_named_subkeys(problem):
    model, x, mask = problem
    key = jr.key(7)
    params, states, _ = _sweep(key, model.hyperparams, model.params, model.states, x, mask, SweepOptions())
    betas, pi, Ab, Q, z = jax.jit(_by_hand)(key, model, x, mask)
    for got, want in [(params.betas, betas), (params.pi, pi), (params.Ab, Ab), (params.Q, Q), (states.z, z)]:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # and the sweep moved: the states were drawn given the new parameters, not the old ones
    assert not np.array_equal(np.asarray(params.Ab), np.asarray(model.params.Ab))


def test_states_only_keeps_parameters_and_the_state_step_randomness(problem):
    model, x, mask = problem
    key = jr.key(8)
    options = SweepOptions(states_only=True)
    params, states, _ = _sweep(key, model.hyperparams, model.params, model.states, x, mask, options)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(model.params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # the states come from the same subkey as in a full sweep (the key is split the same way)
    p = model.params
    z, _, _ = jax.jit(sample_stateseqs)(jr.split(key, 3)[2], x, mask, p.Ab, p.Q, p.pi)
    np.testing.assert_array_equal(np.asarray(states.z), np.asarray(z))


def test_sequence_chunks_draw_the_same_states(problem):
    model, x, mask = problem
    args = (jr.key(9), model.hyperparams, model.params, model.states, x, mask)
    whole = _sweep(*args, SweepOptions())
    chunked = _sweep(*args, SweepOptions(sequence_chunk=2))  # N = 3: two chunks, the last padded
    np.testing.assert_array_equal(np.asarray(whole[1].z), np.asarray(chunked[1].z))
    np.testing.assert_allclose(float(whole[2].log_joint_x), float(chunked[2].log_joint_x), rtol=1e-5)


def test_info_describes_the_model_after_the_sweep(problem):
    model, x, mask = problem
    params, states, info = _sweep(jr.key(10), model.hyperparams, model.params, model.states, x, mask, SweepOptions())
    lj = log_joint_likelihood(x, mask, states.z, params.pi, params.Ab, params.Q)
    np.testing.assert_allclose(float(info.log_joint_x), float(lj["x"]), rtol=1e-4)
    np.testing.assert_allclose(float(info.log_joint_z), float(lj["z"]), rtol=1e-5)
    z, valid = np.asarray(states.z), np.asarray(mask[:, L:]) > 0
    assert int(info.num_states_used) == len(np.unique(z[valid]))
    assert bool(info.ok)


def test_info_flags_a_non_finite_model(problem):
    model, x, mask = problem
    bad = model.params.Ab.at[0, 0, 0].set(jnp.nan)
    params = type(model.params)(Ab=bad, Q=model.params.Q, pi=model.params.pi, betas=model.params.betas)
    _, _, info = _sweep(jr.key(11), model.hyperparams, params, model.states, x, mask, SweepOptions(states_only=True))
    assert not bool(info.ok)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"states_only": 1}, "`states_only` must be True or False"),
        ({"parallel": "yes"}, "`parallel` must be True or False"),
        ({"sequence_chunk": 0}, "sequence_chunk"),
        ({"sequence_chunk": 2.5}, "sequence_chunk"),
    ],
)
def test_sweep_options_reject_bad_values_naming_them(kwargs, message, library_checks):
    with pytest.raises((TypeError, ValueError), match=message):
        SweepOptions(**kwargs)


def test_sweep_options_are_static():
    # hashable and compared by value, so each combination compiles once
    assert SweepOptions(sequence_chunk=4) == SweepOptions(sequence_chunk=4)
    assert hash(SweepOptions(parallel=True)) == hash(SweepOptions(parallel=True))
    assert jax.tree.leaves(SweepOptions(states_only=True, sequence_chunk=3)) == []
