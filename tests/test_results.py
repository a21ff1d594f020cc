"""Usages, runs and transitions against plain-Python counting; relabelling; averaged marginals; result files."""

import csv

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import random_model

import arhmm_eqx as ae


K, D, L = 4, 2, 2


def _random_z(seed, N=3, Tz=50):
    rng = np.random.default_rng(seed)
    z = np.repeat(rng.integers(0, K, (N, Tz // 5)), 5, axis=1)
    z = np.where(rng.random((N, Tz)) < 0.15, rng.integers(0, K, (N, Tz)), z)
    valid = rng.random((N, Tz)) > 0.1
    valid[0, 40:] = False
    return z, valid


def _python_runs(z, valid):
    out = []  # (row, start, state, length)
    for n, (zs, vs) in enumerate(zip(z, valid)):
        for t, (state, ok) in enumerate(zip(zs, vs)):
            if not ok:
                continue
            if t > 0 and vs[t - 1] and zs[t - 1] == state:
                out[-1][3] += 1
            else:
                out.append([n, t, state, 1])
    return out


@pytest.mark.parametrize("seed", range(4))
def test_counts_match_python(seed):
    z, valid = _random_z(seed)
    usage = np.zeros(K)
    trans = np.zeros((K, K))
    for zs, vs in zip(z, valid):
        for t in range(len(zs)):
            if vs[t]:
                usage[zs[t]] += 1
            if t > 0 and vs[t] and vs[t - 1]:
                trans[zs[t - 1], zs[t]] += 1
    np.testing.assert_allclose(ae.workflow.state_usages(z, valid, K), usage / usage.sum(), rtol=1e-12)
    runs = _python_runs(z, valid)
    got = ae.workflow.runs(z, valid)
    np.testing.assert_array_equal(np.stack([got[k] for k in ("sequence", "start", "state", "duration")], 1), runs)
    np.testing.assert_array_equal(ae.workflow.state_durations(z, valid), [r[3] for r in runs])
    np.testing.assert_array_equal(ae.workflow.transition_matrix(z, valid, K, normalize=False), trans)
    rows = trans.sum(1, keepdims=True)
    np.testing.assert_allclose(ae.workflow.transition_matrix(z, valid, K), trans / rows, rtol=1e-12)
    off = trans * (1 - np.eye(K))
    np.testing.assert_allclose(ae.workflow.transition_matrix(z, valid, K, self_transitions=False),
                               off / off.sum(1, keepdims=True), rtol=1e-12)
    # -1 marks frames without a state when `valid` is None (the output of `Dataset.unbatch`)
    filled = np.where(valid, z, -1)
    np.testing.assert_array_equal(ae.workflow.state_durations(filled, None), [r[3] for r in runs])
    np.testing.assert_allclose(ae.workflow.state_usages(filled, None, K), usage / usage.sum(), rtol=1e-12)


def test_unvisited_rows_and_bad_states():
    z = np.array([[0, 0, 1, 1]])
    P = ae.workflow.transition_matrix(z, None, 3)
    np.testing.assert_array_equal(P, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="not below `num_states` = 2"):
        ae.workflow.state_usages(np.array([[0, 2]]), None, 2)
    with pytest.raises(ValueError, match="not below `num_states` = 2"):
        ae.workflow.transition_matrix(np.array([[0, 2]]), None, 2)
    with pytest.raises(ValueError, match="negative states on frames that `valid` counts"):
        ae.workflow.state_usages(np.array([[0, -1]]), np.array([[True, True]]), 2)


def _model_and_data(seed, N=3, T=40):
    Ab, Q, pi, betas = random_model(jr.key(seed), K, D, L)
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=10.0)
    x = jnp.cumsum(0.3 * jr.normal(jr.key(seed + 100), (N, T, D)), axis=1)
    mask = jnp.ones((N, T)).at[1, T - 7 :].set(0.0)
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.choice(K, size=(N, T - L), p=[0.1, 0.5, 0.15, 0.25]), jnp.int32)
    return ae.ARHMM(hp, ae.Params(Ab=Ab, Q=Q, pi=pi, betas=betas), ae.States(z=z)), x, mask


def test_relabel_keeps_likelihoods():
    model, x, mask = _model_and_data(0)
    new, perm = ae.workflow.relabel_by_usage(model, mask)
    valid = np.asarray(mask)[:, L:] > 0
    usage = ae.workflow.state_usages(np.asarray(new.states.z), valid, K)
    assert np.all(np.diff(usage) <= 0) and usage[0] > usage[-1]
    np.testing.assert_array_equal(np.sort(perm), np.arange(K))
    np.testing.assert_array_equal(np.asarray(model.states.z), perm[np.asarray(new.states.z)])
    np.testing.assert_array_equal(new.params.pi, model.params.pi[perm][:, perm])
    np.testing.assert_array_equal(new.params.Q, model.params.Q[perm])
    np.testing.assert_array_equal(new.params.betas, model.params.betas[perm])
    before, after = model.log_joint_likelihood(x, mask), new.log_joint_likelihood(x, mask)
    for k in ("x", "z"):
        np.testing.assert_allclose(after[k], before[k], rtol=1e-6)
    np.testing.assert_allclose(new.marginal_log_likelihood(x, mask), model.marginal_log_likelihood(x, mask),
                               rtol=1e-6)
    np.testing.assert_allclose(new.stateseq_marginals(x, mask), model.stateseq_marginals(x, mask)[..., perm],
                               atol=1e-5)
    with pytest.raises(ValueError, match=r"`mask` must have shape \(N, T\)"):
        ae.workflow.relabel_by_usage(model, mask[:, 1:])


def test_average_marginals():
    models = [_model_and_data(seed)[0] for seed in (1, 2, 3)]
    _, x, mask = _model_and_data(1)
    want = np.mean([np.asarray(m.stateseq_marginals(x, mask)) for m in models], axis=0)
    np.testing.assert_allclose(ae.workflow.average_marginals(models, x, mask), want, atol=1e-6)
    batch = jax.tree.map(lambda *a: jnp.stack(a), *models)
    np.testing.assert_allclose(ae.workflow.average_marginals(batch, x, mask), want, atol=1e-6)
    np.testing.assert_allclose(ae.workflow.average_marginals(models[0], x, mask), models[0].stateseq_marginals(x, mask))


def test_summarize_counts_runs_across_segments(tmp_path):
    rng = np.random.default_rng(5)
    recs = {"a": rng.normal(size=(90, D)), "b/c": rng.normal(size=(30, D))}
    recs["a"][50:53] = np.nan
    ds = ae.workflow.prepare_recordings(recs, nlags=L, segment_length=30, overlap=6)
    model, _, _ = _model_and_data(0)
    z = jnp.zeros(ds.mask[:, L:].shape, jnp.int32).at[:, 20:].set(2)  # a state change inside each row
    model = ae.ARHMM(model.hyperparams, model.params, ae.States(z=z))
    res = ae.workflow.summarize(model, ds, marginals=True)
    states = ds.unbatch(np.asarray(z))
    for name in recs:
        np.testing.assert_array_equal(res.states[name], states[name])
        assert res.marginals[name].shape == (len(recs[name]), K)
    padded = np.full((2, 90), -1)
    padded[0], padded[1, :30] = states["a"], states["b/c"]
    # runs are counted on the recordings, so none is cut where a segment ends
    np.testing.assert_array_equal(np.stack([res.runs[k] for k in ("sequence", "start", "state", "duration")], 1),
                                  _python_runs(padded, padded >= 0))
    np.testing.assert_allclose(res.usages, ae.workflow.state_usages(padded, None, K))
    paths = ae.workflow.save_results(res, tmp_path / "out")
    assert [p.name for p in paths] == ["results.npz", "states.csv", "usages.csv", "durations.csv", "transitions.csv"]
    with open(paths[1]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and rows[0] == {"recording": "a", "frame": "0", "state": "-1"}
    assert [int(r["state"]) for r in rows if r["recording"] == "b/c"] == states["b/c"].tolist()
    with open(paths[2]) as f:
        usage_rows = list(csv.DictReader(f))
    counts = np.bincount(padded[padded >= 0], minlength=K)
    assert [int(r["frames"]) for r in usage_rows] == counts.tolist()
    with open(paths[3]) as f:
        assert sum(1 for _ in csv.DictReader(f)) == len(res.durations)
    saved = np.load(paths[0])
    np.testing.assert_array_equal(saved["states/b/c"], states["b/c"])
    np.testing.assert_allclose(saved["transition_matrix"].sum(1), (res.transition_counts.sum(1) > 0).astype(float))
