"""Recordings to padded segments and back: frame bookkeeping, overlaps, gaps, transforms, files, errors."""

import h5py
import jax.numpy as jnp
import numpy as np
import pytest

import arhmm_eqx as ae
from arhmm_eqx._checks import check_data


L = 2


def _recordings(seed, lengths=(53, 20, 71), D=3, gaps=True):
    rng = np.random.default_rng(seed)
    recs = {f"rec{i}": rng.normal(size=(T, D)) for i, T in enumerate(lengths)}
    if gaps:
        recs["rec0"][10:13] = np.nan  # a gap of 3 frames
        recs["rec2"][40, 1] = np.nan  # one missing entry makes the frame missing
        recs["rec2"][60:] = np.inf
    return recs


def _expected_valid(rec, nlags):
    """Plain Python: a frame carries a state iff it and its `nlags` predecessors are observed."""
    observed = [bool(np.all(np.isfinite(row))) for row in rec]
    return np.array([t >= nlags and all(observed[t - nlags : t + 1]) for t in range(len(rec))])


def _frame_index(ds):
    """`(N, T)` array whose entry is the recording frame each row position holds (-7 for padding)."""
    idx = np.full(ds.mask.shape, -7)
    for row, seg in enumerate(ds.segments):
        idx[row, : seg.stop - seg.start] = np.arange(seg.start, seg.stop)
    return idx


@pytest.mark.parametrize(
    "segment_length, overlap", [(None, None), (20, L), (20, 6), (20, None), (37, 11), (9, 4), (200, None)]
)
def test_unbatch_recovers_frame_indices(segment_length, overlap):
    recs = _recordings(0)
    ds = ae.workflow.prepare_recordings(recs, nlags=L, segment_length=segment_length, overlap=overlap)
    assert ds.names == tuple(recs) and ds.lengths == tuple(len(r) for r in recs.values())
    assert ds.x.dtype == jnp.float32 and ds.mask.shape == ds.x.shape[:2]
    if segment_length is not None:
        assert ds.x.shape[1] <= segment_length
    idx = _frame_index(ds)
    back = ds.unbatch(idx[:, L:])
    marginals = ds.unbatch(np.stack([idx[:, L:], -idx[:, L:]], axis=-1).astype(np.float32))
    for name, rec in recs.items():
        valid = _expected_valid(rec, L)
        want = np.where(valid, np.arange(len(rec)), -1)
        np.testing.assert_array_equal(back[name], want)
        assert back[name].dtype == idx.dtype
        np.testing.assert_array_equal(np.isnan(marginals[name]), np.repeat(~valid[:, None], 2, axis=1))
        np.testing.assert_array_equal(marginals[name][valid, 1], -np.arange(len(rec))[valid])
    x, mask = np.asarray(ds.x), np.asarray(ds.mask)
    for row, seg in enumerate(ds.segments):
        rec = recs[ds.names[seg.recording]]
        n = seg.stop - seg.start
        observed = np.all(np.isfinite(rec[seg.start : seg.stop]), axis=1)
        np.testing.assert_allclose(x[row, :n], np.where(observed[:, None], rec[seg.start : seg.stop], 0), rtol=1e-6)
        np.testing.assert_array_equal(mask[row, L:n], _expected_valid(rec, L)[seg.start + L : seg.stop])
        np.testing.assert_array_equal(mask[row, :L], observed[:L])
        assert not mask[row, n:].any() and not x[row, n:].any()
    check_data(ds.x, ds.mask, nlags=L, latent_dim=3)  # the model accepts the result as it is


@pytest.mark.parametrize("segment_length, overlap", [(20, 6), (30, 12), (16, 8), (25, None)])
def test_overlaps_taken_away_from_segment_edges(segment_length, overlap):
    recs = _recordings(1, lengths=(97, 64), gaps=False)
    ds = ae.workflow.prepare_recordings(recs, nlags=L, segment_length=segment_length, overlap=overlap)
    overlap = L if overlap is None else overlap
    for r, name in enumerate(ds.names):
        segs = [s for s in ds.segments if s.recording == r]
        stride = segment_length - overlap
        assert [s.start for s in segs] == list(range(0, len(segs) * stride, stride))
        assert segs[-1].stop == ds.lengths[r] and all(s.stop - s.start == segment_length for s in segs[:-1])
        # keep ranges tile the frames with states
        assert segs[0].keep_start == L and segs[-1].keep_stop == ds.lengths[r]
        assert all(a.keep_stop == b.keep_start for a, b in zip(segs, segs[1:]))

        def edge_distance(s, t):  # distance to the nearest cut made by segmenting (recording ends excluded)
            lo = t - (s.start + L) if s.start > 0 else np.inf
            hi = s.stop - 1 - t if s.stop < ds.lengths[r] else np.inf
            return min(lo, hi)

        for t in range(L, ds.lengths[r]):
            owner = next(s for s in segs if s.keep_start <= t < s.keep_stop)
            covering = [s for s in segs if s.start + L <= t < s.stop]
            assert owner in covering
            assert all(edge_distance(owner, t) >= edge_distance(s, t) for s in covering)


def test_segments_inside_a_gap_are_dropped():
    rec = np.random.default_rng(2).normal(size=(100, 2))
    rec[25:80] = np.nan
    ds = ae.workflow.prepare_recordings({"a": rec}, nlags=L, segment_length=20, overlap=4)
    starts = [s.start for s in ds.segments]
    assert starts == [0, 16, 64, 80]  # rows starting at 32 and 48 lie inside the gap
    back = ds.unbatch(_frame_index(ds)[:, L:])["a"]
    np.testing.assert_array_equal(back, np.where(_expected_valid(rec, L), np.arange(100), -1))


def test_prepare_errors():
    recs = _recordings(3)
    with pytest.raises(ValueError, match="same number of dimensions.*'rec0' has D = 3.*'bad' has D = 2"):
        ae.workflow.prepare_recordings({**recs, "bad": np.zeros((30, 2))}, nlags=L)
    with pytest.raises(ValueError, match=r"'flat' must be a 2-D array.*\(40,\)"):
        ae.workflow.prepare_recordings({"flat": np.zeros(40)}, nlags=L)
    short = np.ones((10, 3))
    short[::2] = np.nan  # never three observed frames in a row
    with pytest.raises(ValueError, match=r"recording 'short' has no frame with 2 observed frames.*nlags \+ 1 = 3"):
        ae.workflow.prepare_recordings({**recs, "short": short}, nlags=L)
    with pytest.raises(ValueError, match="recording 'tiny'"):
        ae.workflow.prepare_recordings({"tiny": np.ones((2, 3))}, nlags=L)
    with pytest.raises(ValueError, match="nlags <= overlap < segment_length.*overlap = 1"):
        ae.workflow.prepare_recordings(recs, nlags=L, segment_length=20, overlap=1)
    with pytest.raises(ValueError, match="nlags <= overlap < segment_length.*overlap = 20"):
        ae.workflow.prepare_recordings(recs, nlags=L, segment_length=20, overlap=20)
    with pytest.raises(ValueError, match="`overlap` is only used with `segment_length`"):
        ae.workflow.prepare_recordings(recs, nlags=L, overlap=3)
    with pytest.raises(ValueError, match="non-empty mapping"):
        ae.workflow.prepare_recordings({}, nlags=L)
    ds = ae.workflow.prepare_recordings(recs, nlags=L)
    with pytest.raises(ValueError, match=r"leading shape \(N, T - nlags\)"):
        ds.unbatch(np.zeros(ds.mask.shape, int))


def test_standardize_and_whiten():
    rng = np.random.default_rng(4)
    mix = rng.normal(size=(3, 3))
    with np.errstate(invalid="ignore"):  # missing frames stay missing
        recs = {k: v @ mix + np.array([1.0, -2.0, 5.0]) for k, v in _recordings(4).items()}
    out, transform = ae.workflow.standardize(recs)
    frames = np.concatenate([v[np.all(np.isfinite(v), axis=1)] for v in out.values()])
    np.testing.assert_allclose(frames.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(frames.std(axis=0), 1, rtol=1e-12)
    for k in recs:
        np.testing.assert_array_equal(np.isfinite(out[k]).all(axis=1), np.isfinite(recs[k]).all(axis=1))
    new = {"new": rng.normal(size=(7, 3))}
    raw = np.concatenate([v[np.all(np.isfinite(v), axis=1)] for v in recs.values()])
    np.testing.assert_allclose(transform.apply(new)["new"], (new["new"] - raw.mean(axis=0)) / raw.std(axis=0))
    np.testing.assert_allclose(transform.invert(transform.apply(new))["new"], new["new"], rtol=1e-12, atol=1e-12)
    white, wt = ae.workflow.whiten(recs)
    frames = np.concatenate([v[np.all(np.isfinite(v), axis=1)] for v in white.values()])
    np.testing.assert_allclose(np.cov(frames, rowvar=False), np.eye(3), atol=1e-10)
    np.testing.assert_allclose(wt.invert(wt.apply(new))["new"], new["new"], rtol=1e-10, atol=1e-10)
    two, t2 = ae.workflow.whiten(recs, num_components=2)
    assert two["rec0"].shape == (53, 2) and t2.matrix.shape == (2, 3)
    with pytest.raises(ValueError, match="has D = 2; the transform was fitted with D = 3"):
        transform.apply({"x": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="`num_components` must be between 1 and D = 3"):
        ae.workflow.whiten(recs, num_components=4)


def test_load_recordings(tmp_path):
    recs = _recordings(5)
    np.savez(tmp_path / "r.npz", **recs)
    loaded = ae.workflow.load_recordings(tmp_path / "r.npz")
    assert list(loaded) == list(recs)
    for k in recs:
        np.testing.assert_array_equal(loaded[k], recs[k])
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f["top"] = recs["rec0"]
        f.create_group("mouse1").create_group("day2")["session"] = recs["rec1"]
    loaded = ae.workflow.load_recordings(str(tmp_path / "r.h5"))
    assert sorted(loaded) == ["mouse1/day2/session", "top"]
    np.testing.assert_array_equal(loaded["mouse1/day2/session"], recs["rec1"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ae.workflow.load_recordings(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="expected a .npz, .h5 or .hdf5 file; got extension '.csv'"):
        ae.workflow.load_recordings(tmp_path / "r.csv")
    np.savez(tmp_path / "bad.npz", a=np.zeros((5, 2)), b=np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match=r"bad.npz.*'b' must be a 2-D array"):
        ae.workflow.load_recordings(tmp_path / "bad.npz")
    np.savez(tmp_path / "mixed.npz", a=np.zeros((5, 2)), b=np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"mixed.npz.*same number of dimensions"):
        ae.workflow.load_recordings(tmp_path / "mixed.npz")


@pytest.mark.parametrize("segment_length, overlap", [(20, None), (20, L), (20, 6), (37, 11)])
def test_duplicated_frames_counts_the_overlap_beyond_the_lags(segment_length, overlap):
    """With the default overlap (nlags) every valid frame carries a state in exactly one row;
    a larger one puts `overlap - nlags` frames per cut into two rows."""
    recs = _recordings(1, lengths=(97, 64), gaps=False)
    ds = ae.workflow.prepare_recordings(recs, nlags=L, segment_length=segment_length, overlap=overlap)
    mask = np.asarray(ds.mask) > 0
    with_state = {name: np.zeros(n, int) for name, n in zip(ds.names, ds.lengths)}
    for row, seg in enumerate(ds.segments):
        n = seg.stop - seg.start
        with_state[ds.names[seg.recording]][seg.start + L : seg.stop] += mask[row, L:n]
    twice = sum(int(np.sum(c == 2)) for c in with_state.values())
    assert all(c.max() <= 2 for c in with_state.values())
    assert ds.duplicated_frames == twice
    cuts = len(ds.segments) - len(ds.names)
    assert twice == cuts * ((L if overlap is None else overlap) - L)


def test_standardize_survives_one_bad_value():
    """A glitch of 1e10 in one frame, or one recording in units 1e300 times larger, neither
    erases the scale of a dimension (it was ~5e-9 or 0 for every recording) nor passes unnoticed."""
    rng = np.random.default_rng(0)
    clean = {"a": rng.normal(size=(500, 2)), "b": rng.normal(size=(400, 2)) * 3}
    _, reference = ae.workflow.standardize(clean)
    glitch = {"a": clean["a"], "b": clean["b"].copy()}
    glitch["b"][17, 1] = 1e10
    with pytest.warns(RuntimeWarning, match=r"1 frame\(s\).*recording 'b' frame 17 \(dimension 1"):
        _, transform = ae.workflow.standardize(glitch)
    np.testing.assert_allclose(np.diag(transform.matrix), np.diag(reference.matrix), rtol=1e-3)
    np.testing.assert_allclose(transform.mean, reference.mean, atol=1e-2)
    scaled = {"a": clean["a"], "b": clean["b"] * 1e300}
    with pytest.warns(RuntimeWarning, match=r"400 frame\(s\).*recording 'b' frame 0"):
        _, transform = ae.workflow.standardize(scaled)
    np.testing.assert_allclose(np.diag(transform.matrix), 1 / clean["a"].std(axis=0), rtol=1e-12)
    # a spread that no float can invert is an error naming the dimension, never a zero or inf scale
    with pytest.raises(ValueError, match="dimension 1 of the recordings cannot be standardised"):
        ae.workflow.standardize({"a": np.stack([rng.normal(size=100), np.arange(100) * 5e-324], axis=1)})
    out, transform = ae.workflow.standardize({"a": np.stack([rng.normal(size=100), np.full(100, 7.0)], axis=1)})
    assert transform.matrix[1, 1] == 1 and np.all(out["a"][:, 1] == 0)  # a constant dimension is only centred
