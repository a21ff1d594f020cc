"""Checkpoints: round trips, atomic writes, damaged files, and the reference dict model as .npz/.h5."""

import io
import json
import os

import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest

import arhmm_eqx as ae


K, D, L, N, T = 3, 2, 1, 2, 30


@pytest.fixture(scope="module")
def model():
    x = jr.normal(jr.key(0), (N, T, D))
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=123.0)
    return ae.ARHMM.from_prior(hp, x, jnp.ones((N, T)), key=jr.key(1))


def _trace(n):
    """A stacked `GibbsInfo` of `n` made-up sweeps (NumPy leaves, as `fit` keeps them)."""
    rng = np.random.default_rng(n)
    one = ae.GibbsInfo(log_joint_x=jnp.float32(0), log_joint_z=jnp.float32(0), num_states_used=jnp.int32(0),
                       median_duration=jnp.float32(0), ok=jnp.bool_(True))
    return jtu.tree_map(lambda a: (rng.normal(size=n) * 100).astype(np.asarray(a).dtype), one)


def _assert_same(a, b):
    la, lb = jtu.tree_leaves(a), jtu.tree_leaves(b)
    assert jtu.tree_structure(a) == jtu.tree_structure(b)
    for u, v in zip(la, lb):
        assert np.asarray(u).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_round_trip(model, tmp_path):
    trace = _trace(7)
    path = ae.workflow.save_checkpoint(tmp_path, model, iteration=7, key=jr.key(5), infos=trace, metadata={"note": "x"})
    assert path == tmp_path / "ckpt_000007.json" and (tmp_path / "ckpt_000007.eqx").is_file()
    loaded, meta = ae.workflow.load_checkpoint(path)
    _assert_same(loaded, model)
    _assert_same(meta["infos"], trace)
    assert meta["iteration"] == 7 and meta["user"] == {"note": "x"}
    assert (meta["num_states"], meta["latent_dim"], meta["nlags"]) == (K, D, L)
    assert (meta["num_sequences"], meta["num_frames_z"], meta["dtype"]) == (N, T - L, "float32")
    assert meta["hyperparams"]["kappa"] == pytest.approx(123.0) and meta["library_version"] == ae.__version__
    np.testing.assert_array_equal(jr.key_data(meta["key"]), jr.key_data(jr.key(5)))
    assert str(jr.key_impl(meta["key"])) == str(jr.key_impl(jr.key(5)))
    # the same key stream: a draw with the loaded key equals one with the original
    assert float(jr.normal(meta["key"])) == float(jr.normal(jr.key(5)))
    # loading by stem, by the .eqx path and by directory gives the same checkpoint
    for p in (tmp_path / "ckpt_000007", tmp_path / "ckpt_000007.eqx", tmp_path):
        _assert_same(ae.workflow.load_checkpoint(p)[0], model)


def test_legacy_key_round_trip(model, tmp_path):
    ae.workflow.save_checkpoint(tmp_path, model, iteration=0, key=jr.PRNGKey(3))
    _, meta = ae.workflow.load_checkpoint(tmp_path)
    assert meta["key"].dtype == jnp.uint32
    np.testing.assert_array_equal(meta["key"], jr.PRNGKey(3))
    assert meta["infos"].ok.shape == (0,)


def test_latest_and_snapshots_kept(model, tmp_path):
    assert ae.workflow.latest_checkpoint(tmp_path) is None
    assert ae.workflow.latest_checkpoint(tmp_path / "missing") is None
    for it in (5, 100, 20):
        ae.workflow.save_checkpoint(tmp_path, model, iteration=it, key=jr.key(0))
    (tmp_path / ".ckpt_000200.eqx.abc.tmp").write_bytes(b"half a file")  # left by a killed writer
    assert ae.workflow.latest_checkpoint(tmp_path) == tmp_path / "ckpt_000100.json"
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert names == [f"ckpt_{i:06d}.{e}" for i in (5, 20, 100) for e in ("eqx", "json")]


@pytest.mark.parametrize("fail_on_call", [1, 2])  # 1: while writing the .eqx; 2: while writing the .json
def test_failed_write_keeps_earlier_checkpoint(model, tmp_path, monkeypatch, fail_on_call):
    ae.workflow.save_checkpoint(tmp_path, model, iteration=1, key=jr.key(0))
    real_fdopen, calls = os.fdopen, []

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError("No space left on device")

    def fdopen(fd, *args, **kwargs):
        calls.append(fd)
        f = real_fdopen(fd, *args, **kwargs)
        return HalfWriter(f) if len(calls) == fail_on_call else f

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match="No space left"):
        ae.workflow.save_checkpoint(tmp_path, model, iteration=2, key=jr.key(0))
    monkeypatch.undo()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temporary files removed
    assert not (tmp_path / "ckpt_000002.json").exists()
    assert ae.workflow.latest_checkpoint(tmp_path) == tmp_path / "ckpt_000001.json"
    _assert_same(ae.workflow.load_checkpoint(tmp_path)[0], model)


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        i = len(data) - 5
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])


@pytest.mark.parametrize("how", ["truncate", "flip"])
@pytest.mark.parametrize("suffix", [".eqx", ".json"])
def test_damaged_checkpoint(model, tmp_path, how, suffix):
    ae.workflow.save_checkpoint(tmp_path, model, iteration=1, key=jr.key(0))
    ae.workflow.save_checkpoint(tmp_path, model, iteration=2, key=jr.key(0))
    bad = tmp_path / f"ckpt_000002{suffix}"
    _damage(bad, how)
    with pytest.raises(ae.workflow.CheckpointError, match="corrupt or truncated") as err:
        ae.workflow.load_checkpoint(tmp_path / "ckpt_000002.json")
    assert bad.name in str(err.value) and "previous" in str(err.value) and "\n" not in str(err.value)
    with pytest.warns(RuntimeWarning, match="ckpt_000002"):
        assert ae.workflow.latest_checkpoint(tmp_path) == tmp_path / "ckpt_000001.json"
    with pytest.warns(RuntimeWarning):
        _assert_same(ae.workflow.load_checkpoint(tmp_path)[0], model)  # a directory: the newest intact one


def test_checksum_ok_but_wrong_shapes(model, tmp_path):
    path = ae.workflow.save_checkpoint(tmp_path, model, iteration=1, key=jr.key(0))
    meta = json.loads(path.read_text())
    meta["leaves"][0]["shape"] = [4]  # alpha is 0-d
    path.write_text(json.dumps(meta))
    with pytest.raises(ae.workflow.CheckpointError, match="ckpt_000001.eqx.*corrupt"):
        ae.workflow.load_checkpoint(path)


def test_missing_and_bad_arguments(model, tmp_path):
    with pytest.raises(ae.workflow.CheckpointError, match="does not exist"):
        ae.workflow.load_checkpoint(tmp_path / "ckpt_000001.json")
    with pytest.raises(ae.workflow.CheckpointError, match="no valid checkpoint"):
        ae.workflow.load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="iteration"):
        ae.workflow.save_checkpoint(tmp_path, model, iteration=-1, key=jr.key(0))
    with pytest.raises(TypeError):  # not JSON: nothing is written
        ae.workflow.save_checkpoint(tmp_path, model, iteration=1, key=jr.key(0), metadata={"a": object()})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "ckpt_000001.json").write_text(json.dumps({"format": "arhmm_eqx checkpoint", "format_version": 99}))
    with pytest.raises(ae.workflow.CheckpointError, match="format version 99"):
        ae.workflow.load_checkpoint(tmp_path / "ckpt_000001.json")


@pytest.mark.parametrize("ext", ["npz", "h5"])
def test_moseq_model_round_trip(model, tmp_path, ext):
    path = ae.workflow.save_moseq_model(tmp_path / f"model.{ext}", model, key=jr.key(9))
    _assert_same(ae.workflow.load_moseq_model(path), model)
    if ext == "npz":
        with np.load(path) as f:
            assert {"params/Ab", "params/Q", "params/pi", "params/betas", "states/z", "seed",
                    "hypparams/trans_hypparams/kappa", "hypparams/ar_hypparams/nlags"} <= set(f.files)
            np.testing.assert_array_equal(f["seed"], jr.key_data(jr.key(9)))
            np.testing.assert_array_equal(f["params/Ab"], model.params.Ab)
    else:
        import h5py

        with h5py.File(path) as f:
            np.testing.assert_array_equal(f["params"]["Q"][()], model.params.Q)
            assert int(f["hypparams/trans_hypparams/num_states"][()]) == K


def test_moseq_model_errors(model, tmp_path):
    with pytest.raises(ValueError, match=r"\.npz, \.h5 or \.hdf5"):
        ae.workflow.save_moseq_model(tmp_path / "model.pkl", model, key=jr.key(0))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ae.workflow.load_moseq_model(tmp_path / "none.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="cannot read a model from"):
        ae.workflow.load_moseq_model(tmp_path / "other.npz")


@pytest.mark.parametrize("edit", ["key", "states_only", "iteration", "trace_length", "rename", "swap"])
def test_metadata_is_bound_to_the_leaves(model, tmp_path, edit):
    """Editing the .json (key, sweep options, iteration), renaming a pair or pairing one file with
    another checkpoint's reads as damage: the chain is never continued from mismatched files."""
    ae.workflow.save_checkpoint(tmp_path, model, iteration=1, key=jr.key(0), infos=_trace(1))
    path = ae.workflow.save_checkpoint(tmp_path, model, iteration=2, key=jr.key(0), infos=_trace(2),
                              sweep_options={"states_only": False, "sequence_chunk": None, "parallel": False})
    meta = json.loads(path.read_text())
    if edit == "key":
        meta["key"]["data"][-1] += 1
    elif edit == "states_only":
        meta["sweep_options"]["states_only"] = True
    elif edit == "iteration":
        meta["iteration"] = 5
    elif edit == "trace_length":
        meta["trace_length"] = 1
    if edit in ("key", "states_only", "iteration", "trace_length"):
        path.write_text(json.dumps(meta))
        bad = path
    elif edit == "rename":  # both files of ckpt 2 renamed to ckpt 5 (checksum intact, name wrong)
        for suffix in (".eqx", ".json"):
            os.replace(path.with_suffix(suffix), tmp_path / f"ckpt_000005{suffix}")
        bad = tmp_path / "ckpt_000005.json"
    else:  # the .eqx of another chain (seed 7) beside this .json
        trace = jtu.tree_map(lambda a: a[::-1], _trace(2))
        other = ae.workflow.save_checkpoint(tmp_path / "other", model, iteration=2, key=jr.key(7), infos=trace)
        os.replace(other.with_suffix(".eqx"), path.with_suffix(".eqx"))
        bad = path
    with pytest.raises(ae.workflow.CheckpointError, match="corrupt or truncated") as err:
        ae.workflow.load_checkpoint(bad)
    assert bad.name in str(err.value)
    with pytest.warns(RuntimeWarning, match=f"skipping {bad.name}"):
        assert ae.workflow.latest_checkpoint(tmp_path) == tmp_path / "ckpt_000001.json"


def test_unreadable_metadata_is_skipped(model, tmp_path):
    ae.workflow.save_checkpoint(tmp_path, model, iteration=1, key=jr.key(0))
    path = ae.workflow.save_checkpoint(tmp_path, model, iteration=2, key=jr.key(0))
    for text in (b"\xff\xfe not utf-8", b"[1, 2]", b'{"format": "arhmm_eqx checkpoint"}'):
        path.write_bytes(text)
        with pytest.warns(RuntimeWarning, match="skipping ckpt_000002.json"):
            assert ae.workflow.latest_checkpoint(tmp_path) == tmp_path / "ckpt_000001.json"


@pytest.mark.parametrize(
    "name, state, change, message",
    [
        ("params/Ab", 1, lambda a: a * np.nan, "params/Ab of state 1 holds NaN or inf"),
        ("params/Ab", 0, lambda a: a + np.inf, "params/Ab of state 0 holds NaN or inf"),
        ("params/Q", 2, lambda a: a * np.nan, "params/Q of state 2 holds NaN or inf"),
        ("params/Q", 1, lambda a: a * 0, "params/Q of state 1 is not positive definite"),
        ("params/Q", 0, lambda a: a + np.array([[0, 1], [0, 0]]), "params/Q of state 0 is not symmetric"),
        ("params/Q", 2, lambda a: a - 10 * np.eye(D), "params/Q of state 2 is not positive definite"),
        ("params/pi", 1, lambda a: a - 1, "params/pi of state 1 .*negative"),
        ("params/pi", 0, lambda a: a * 2, "params/pi of state 0 .*sums to 2"),
        ("params/pi", 2, lambda a: a * 0.1, "params/pi of state 2 .*sums to 0.1"),
    ],
)
def test_model_file_is_checked_before_use(model, tmp_path, name, state, change, message):
    path = ae.workflow.save_moseq_model(tmp_path / "model.npz", model, key=jr.key(0))
    with np.load(path) as f:
        flat = {k: f[k] for k in f.files}
    flat[name] = flat[name].copy()
    flat[name][state] = change(flat[name][state])
    np.savez(path, **flat)
    with pytest.raises(ValueError, match=message) as err:
        ae.workflow.load_moseq_model(path)
    assert "model.npz" in str(err.value) and "\n" not in str(err.value)


def test_npz_files_are_checked_before_loading(model, tmp_path):
    """Not a zip, empty, pickled objects, or arrays declared larger than the memory: one-line errors."""
    (tmp_path / "text.npz").write_text("hello")
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    huge = tmp_path / "huge.npz"
    np.savez(huge, a=np.zeros(3))
    import zipfile

    header = io.BytesIO()  # a header declaring 2^42 float64 (32 TiB), with no data behind it
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**42,)})
    with zipfile.ZipFile(huge, "w") as z:
        z.writestr("a.npy", header.getvalue())
    for name, fragment in [("text", "not a valid .npz file"), ("empty", "not a valid .npz file"),
                           ("objects", "Python objects"), ("huge", "more than the")]:
        with pytest.raises((ValueError, MemoryError), match=fragment) as err:
            ae.workflow.load_moseq_model(tmp_path / f"{name}.npz")
        assert f"{name}.npz" in str(err.value) and "allow_pickle" not in str(err.value)
        with pytest.raises((ValueError, MemoryError), match=fragment):
            ae.workflow.load_recordings(tmp_path / f"{name}.npz")
