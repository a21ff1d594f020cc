"""The fit loop: chunks equal one `run_chain` bit for bit; checkpoints, resume, Ctrl-C and non-finite sweeps."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest

import arhmm_eqx as ae
import arhmm_eqx.workflow._fit as _fit_module
from arhmm_eqx.workflow import _fit


# Lengths of compiled chunks are kept to {2, 4}: each new length compiles the sweep again.
K, D, L, N, T = 3, 2, 1, 2, 30
KEY = jr.key(2)


@pytest.fixture(scope="module")
def data():
    x = jr.normal(jr.key(0), (N, T, D))
    mask = jnp.ones((N, T)).at[1, 25:].set(0.0)
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=50.0)
    return ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1)), x, mask


@pytest.fixture(scope="module")
def reference(data):
    model, x, mask = data
    return ae.run_chain(KEY, model, x, mask, 4)


def _assert_same(a, b):
    assert jtu.tree_structure(a) == jtu.tree_structure(b)
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_chunks_equal_run_chain(data, reference, tmp_path, capsys):
    model, x, mask = data
    result = ae.workflow.fit(model, x, mask, key=KEY, num_iters=4, chunk_size=3, save_every=2, checkpoint_dir=tmp_path)
    assert (result.iteration, result.stopped_reason, result.first_iter) == (4, "completed", 0)
    _assert_same(result.model, reference[0])
    _assert_same(result.infos, reference[1])
    assert result.checkpoint == tmp_path / "ckpt_000004.json"
    assert [p.name for p in ae.workflow._checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt_000000.json", "ckpt_000002.json", "ckpt_000004.json"]
    bar = capsys.readouterr().err
    assert "4/4" in bar and "log_joint_x=" in bar and "states=" in bar
    # the checkpoints hold the model and the trace up to their iteration
    mid, meta = ae.workflow.load_checkpoint(tmp_path / "ckpt_000002.json")
    _assert_same(mid, ae.run_chain(KEY, model, x, mask, 2)[0])
    _assert_same(meta["infos"], jtu.tree_map(lambda a: a[:2], reference[1]))
    # resuming from iteration 2 gives the uninterrupted chain and its whole trace
    resumed = ae.workflow.resume(tmp_path / "ckpt_000002.json", x, mask, num_iters=2, progress=False,
                        checkpoint_dir=tmp_path / "again")
    _assert_same(resumed.model, reference[0])
    _assert_same(resumed.infos, reference[1])
    assert (resumed.iteration, resumed.first_iter) == (4, 0)
    # positive control: a resumed chain started at the wrong sweep index differs
    wrong = ae.workflow.fit(mid, x, mask, key=KEY, num_iters=2, progress=False)
    assert not np.array_equal(np.asarray(wrong.model.params.Ab), np.asarray(reference[0].params.Ab))


def test_resume_reuses_the_saved_sweep_options(data, tmp_path):
    model, x, mask = data
    reference = ae.run_chain(KEY, model, x, mask, 4, states_only=True, sequence_chunk=1)
    ae.workflow.fit(model, x, mask, key=KEY, num_iters=2, checkpoint_dir=tmp_path, progress=False, states_only=True,
           sequence_chunk=1)
    meta = ae.workflow._checkpoint.read_checkpoint_metadata(tmp_path / "ckpt_000002.json")
    assert meta["sweep_options"] == {"states_only": True, "sequence_chunk": 1, "parallel": False}
    resumed = ae.workflow.resume(tmp_path, x, mask, num_iters=2, progress=False)
    _assert_same(resumed.model, reference[0])
    # positive control: overriding the saved option gives another chain
    other = ae.workflow.resume(tmp_path / "ckpt_000002.json", x, mask, num_iters=2, progress=False, states_only=False,
                      checkpoint_dir=tmp_path / "other")
    assert not np.array_equal(np.asarray(other.model.params.Ab), np.asarray(reference[0].params.Ab))


def test_interrupt_returns_last_chunk_and_checkpoints(data, reference, tmp_path, monkeypatch):
    model, x, mask = data
    real, calls = _fit.scan_chain_compiled, []

    def interrupted(*args):
        calls.append(args[4])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(_fit, "scan_chain_compiled", interrupted)
    result = ae.workflow.fit(model, x, mask, key=KEY, num_iters=4, chunk_size=2,
                             checkpoint_dir=tmp_path, progress=False)
    monkeypatch.undo()
    assert (result.stopped_reason, result.iteration) == ("interrupted", 2)
    _assert_same(result.model, ae.run_chain(KEY, model, x, mask, 2)[0])
    assert ae.workflow.latest_checkpoint(tmp_path) == tmp_path / "ckpt_000002.json" == result.checkpoint
    resumed = ae.workflow.resume(tmp_path, x, mask, num_iters=2, progress=False)
    _assert_same(resumed.model, reference[0])
    _assert_same(resumed.infos, reference[1])


def test_nonfinite_sweep_keeps_last_good_model(data, tmp_path, monkeypatch):
    """Sweeps from index 2 on are made to fail (NaN parameters, `ok` False) inside a chunk of 4."""
    model, x, mask = data
    real = _fit.scan_chain_compiled

    def failing(key, m, x_, mask_, start, n, *rest):
        new, infos = real(key, m, x_, mask_, start, n, *rest)
        bad = (int(start) + np.arange(n)) >= 2
        if bad.any():
            new = jtu.tree_map(lambda a: a * jnp.nan if jnp.issubdtype(a.dtype, jnp.floating) else a, new)
            infos = eqx.tree_at(lambda i: i.ok, infos, infos.ok & ~jnp.asarray(bad))
        return new, infos

    monkeypatch.setattr(_fit, "scan_chain_compiled", failing)
    with pytest.warns(RuntimeWarning, match="sweep 3 produced non-finite values.*after sweep 2"):
        result = ae.workflow.fit(model, x, mask, key=KEY, num_iters=4, chunk_size=4,
                                 checkpoint_dir=tmp_path, progress=False)
    monkeypatch.undo()
    assert (result.stopped_reason, result.iteration, result.infos.ok.shape) == ("nonfinite", 2, (2,))
    good, good_infos = ae.run_chain(KEY, model, x, mask, 2)
    _assert_same(result.model, good)
    _assert_same(result.infos, good_infos)
    _assert_same(ae.workflow.load_checkpoint(tmp_path)[0], good)


def test_overflowing_data_stops_at_first_sweep(data, tmp_path):
    """Real non-finite values: float32 squares of 1e25 overflow in the AR statistics."""
    model, x, mask = data
    big = x * 1e25
    start = ae.ARHMM.from_prior(model.hyperparams, big, mask, key=jr.key(1))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        result = ae.workflow.fit(start, big, mask, key=KEY, num_iters=2, chunk_size=2, checkpoint_dir=tmp_path,
                        progress=False)
    assert (result.stopped_reason, result.iteration) == ("nonfinite", 0)
    _assert_same(result.model, start)
    assert ae.workflow.latest_checkpoint(tmp_path) == tmp_path / "ckpt_000000.json"


def test_bad_arguments(data, tmp_path):
    model, x, mask = data
    with pytest.raises(ValueError, match="`num_iters` must be an integer >= 1; got 0"):
        ae.workflow.fit(model, x, mask, key=KEY, num_iters=0)
    # (the suite's runtime type checker rejects it at `fit`'s signature first; the check
    # inside is what users without one see)
    with pytest.raises(TypeError, match="`model` must be an `ARHMM`"):
        _fit_module._fit(model.params, x, mask, key=KEY, num_iters=2, start_iter=0, checkpoint_dir=None,
                         save_every=None, progress=False, chunk_size=None, states_only=False,
                         sequence_chunk=None, parallel=False, metadata=None, history=None)
    with pytest.raises(ValueError, match="`save_every` needs `checkpoint_dir`"):
        ae.workflow.fit(model, x, mask, key=KEY, num_iters=2, save_every=1)
    with pytest.raises(ValueError, match="`x` has latent_dim D = 3"):
        ae.workflow.fit(model, jnp.zeros((N, T, 3)), mask, key=KEY, num_iters=2)
    ae.workflow.save_checkpoint(tmp_path, model, iteration=0, key=KEY)
    with pytest.raises(ValueError, match=r"fitted on `x` of shape \(N, T, D\) = \(2, 30, 2\); got \(2, 31, 2\)"):
        ae.workflow.resume(tmp_path, jnp.zeros((N, T + 1, D)), jnp.ones((N, T + 1)), num_iters=1)
    with pytest.raises(ae.workflow.CheckpointError, match="empty.json' does not exist; pass a checkpoint directory"):
        ae.workflow.resume(tmp_path / "empty", x, mask, num_iters=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ae.workflow.CheckpointError, match="no valid checkpoint in"):
        ae.workflow.resume(tmp_path / "empty", x, mask, num_iters=1)


def test_refuses_a_folder_with_another_chains_checkpoints(data, tmp_path):
    model, x, mask = data
    ae.workflow.fit(model, x, mask, key=KEY, num_iters=2, chunk_size=2, checkpoint_dir=tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="another chain"):
        ae.workflow.fit(model, x, mask, key=jr.key(99), num_iters=2, chunk_size=2,
                        checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="past iteration 0"):  # the same chain again from the start
        ae.workflow.fit(model, x, mask, key=KEY, num_iters=2, chunk_size=2, checkpoint_dir=tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing was touched
    # continuing the same chain from its newest checkpoint is allowed
    resumed = ae.workflow.resume(tmp_path, x, mask, num_iters=2, chunk_size=2, progress=False)
    assert resumed.iteration == 4
