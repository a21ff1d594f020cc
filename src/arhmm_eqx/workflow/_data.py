"""From recordings to model input: loading, standardising, padding and segmenting; `Dataset.unbatch` maps back."""

import os
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._checks import check_int
from .._custom_types import Array, ArrayLike, Float


class Segment(NamedTuple):
    """Where one row of a `Dataset` comes from.

    Row frames `0 .. stop - start - 1` are frames `start .. stop - 1` of recording number
    `recording`; `Dataset.unbatch` takes frames `keep_start .. keep_stop - 1` of the
    recording from this row.
    """

    recording: int
    start: int
    stop: int
    keep_start: int
    keep_stop: int


class Dataset(eqx.Module):
    """Recordings padded (and cut into segments) to `x` `(N, T, D)` and `mask` `(N, T)`.

    `mask[n, t]` is 1 when frame `t` of row `n` is observed and, for `t >= nlags`, its
    `nlags` preceding frames are observed too (so its regressor is complete); missing
    frames hold 0 in `x`. `names`, `lengths` and `segments` (one `Segment` per row) are
    static bookkeeping. Pass `dataset.x, dataset.mask` to `ARHMM.from_prior`, `run_chain`, ...
    and map per-frame results back to the recordings with `unbatch`.
    """

    x: Float[Array, "N T D"]
    mask: Float[Array, "N T"]
    nlags: int = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)
    lengths: tuple[int, ...] = eqx.field(static=True)
    segments: tuple[Segment, ...] = eqx.field(static=True)
    # Per-group transition matrices: the group index of each row (that of its recording) and
    # the group labels in index order; None when `prepare_recordings` had no `groups`.
    groups: Array | None = None
    group_names: tuple[str, ...] | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if len(self.segments) != self.x.shape[0]:
            raise ValueError(f"`segments` has {len(self.segments)} entries but `x` has {self.x.shape[0]} rows.")

    @property
    def num_groups(self) -> int | None:
        """`G`, the number of groups (`Hyperparams(..., num_groups=dataset.num_groups)`), or None."""
        return None if self.group_names is None else len(self.group_names)

    def recording_groups(self) -> dict[str, str]:
        """`{recording name: group label}` (empty without groups)."""
        if self.group_names is None:
            return {}
        g = np.asarray(self.groups)
        return {self.names[seg.recording]: self.group_names[g[row]] for row, seg in enumerate(self.segments)}

    @property
    def duplicated_frames(self) -> int:
        """Valid frames that carry a state in two rows: the part of a segment overlap beyond the
        `nlags` lag-only frames of the later segment. The sampler treats rows as independent
        sequences, so each of these frames enters the likelihood twice; 0 with the default
        `overlap = nlags`, where every frame carries a state in exactly one row."""
        mask = np.asarray(self.mask) > 0
        count = 0
        for (ra, a), (rb, b) in zip(enumerate(self.segments), list(enumerate(self.segments))[1:]):
            if a.recording != b.recording or b.start + self.nlags >= a.stop:
                continue
            lo, hi = b.start + self.nlags, a.stop  # frames with a state in both rows
            count += int(np.sum(mask[ra, lo - a.start : hi - a.start] & mask[rb, lo - b.start : hi - b.start]))
        return count

    @property
    def num_sequences(self) -> int:
        """`N`, the number of rows (segments)."""
        return self.x.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.x.shape[2]

    @property
    def num_frames(self) -> int:
        """Total number of frames over all recordings (observed or not)."""
        return sum(self.lengths)

    @property
    def num_valid(self) -> int:
        """Number of frames that carry a state and enter the likelihood (`mask[:, nlags:]` summed)."""
        return int(np.asarray(self.mask)[:, self.nlags :].sum())

    @property
    def valid(self) -> np.ndarray:
        """`(N, T - nlags)` bool: the frames that carry a state, aligned with `z` (for `state_usages` etc.)."""
        return np.asarray(self.mask)[:, self.nlags :] > 0

    def unbatch(self, values: ArrayLike) -> dict[str, np.ndarray]:
        """Map per-frame values of the rows back to the recordings.

        **Arguments:**

        - `values`: an array with leading shape `(N, T - nlags)`, such as the states
          `model.states.z` or the marginals `model.stateseq_marginals(x, mask)` `(N, T - nlags, K)`.

        **Returns:**

        `{name: array of shape (T_i, ...)}` in the order of `names`. Frames without a state
        (the first `nlags` frames of a recording, missing frames and frames whose lags are
        missing) hold -1 for integer `values` and NaN for floating ones. A frame covered by
        two overlapping segments is taken from the one whose edge it is farther from: the
        first half of an overlap from the earlier segment, the second half from the later.
        """
        values = np.asarray(values)
        N, T = self.x.shape[:2]
        L = self.nlags
        if values.shape[:2] != (N, T - L):
            raise ValueError(
                f"`values` must have leading shape (N, T - nlags) = {(N, T - L)}, like the states `z`; "
                f"got shape {values.shape}."
            )
        if np.issubdtype(values.dtype, np.integer):
            fill = -1
        elif np.issubdtype(values.dtype, np.floating):
            fill = np.nan
        else:
            raise TypeError(f"`values` must be an integer or floating array; got dtype {values.dtype}.")
        out = {name: np.full((n,) + values.shape[2:], fill, values.dtype) for name, n in zip(self.names, self.lengths)}
        valid = self.valid
        for row, seg in enumerate(self.segments):
            lo, hi = seg.keep_start - seg.start - L, seg.keep_stop - seg.start - L
            keep = valid[row, lo:hi].reshape((-1,) + (1,) * (values.ndim - 2))
            out[self.names[seg.recording]][seg.keep_start : seg.keep_stop] = np.where(keep, values[row, lo:hi], fill)
        return out


def _plan_segments(length: int, nlags: int, segment_length: int | None, overlap: int) -> list[tuple[int, int]]:
    """`(start, stop)` of the segments of one recording: windows of `segment_length` frames,
    each starting `segment_length - overlap` frames after the previous one, the last one
    reaching the end of the recording (and shorter where it does)."""
    if segment_length is None or length <= segment_length:
        return [(0, length)]
    stride = segment_length - overlap
    spans, start = [], 0
    while True:
        stop = min(start + segment_length, length)
        spans.append((start, stop))
        if stop == length:
            return spans
        start += stride


def _observed_and_lags(observed: np.ndarray, nlags: int) -> np.ndarray:
    """`valid[t]`: frame `t >= nlags` and its `nlags` predecessors observed; frames `t < nlags`: observed."""
    valid = observed.copy()
    for lag in range(1, nlags + 1):
        valid[lag:] &= observed[:-lag]
    return valid


def _as_recordings(recordings: Mapping[str, ArrayLike], what: str = "recordings") -> dict[str, np.ndarray]:
    """Check names, rank and dimension; return float64 NumPy copies."""
    if not isinstance(recordings, Mapping) or len(recordings) == 0:
        raise ValueError(
            f"`{what}` must be a non-empty mapping {{name: array of shape (T, D)}}; got {type(recordings).__name__}."
        )
    out, dims = {}, {}
    for name, rec in recordings.items():
        if not isinstance(name, str):
            raise TypeError(f"recording names must be strings; got {name!r}.")
        arr = np.asarray(rec)
        if arr.ndim != 2:
            raise ValueError(
                f"recording {name!r} must be a 2-D array (frames, dimensions); got shape {arr.shape}. "
                "Reshape a 1-D recording with `a[:, None]`."
            )
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"recording {name!r} must hold numbers; got dtype {arr.dtype}.")
        out[name] = arr.astype(np.float64)
        dims[name] = arr.shape[1]
    if len(set(dims.values())) > 1:
        first = next(iter(dims))
        odd = next(n for n, d in dims.items() if d != dims[first])
        raise ValueError(
            f"all recordings must have the same number of dimensions D: {first!r} has D = {dims[first]} but "
            f"{odd!r} has D = {dims[odd]}."
        )
    return out


def prepare_recordings(
    recordings: Mapping[str, ArrayLike],
    *,
    nlags: int,
    segment_length: int | None = None,
    overlap: int | None = None,
    dtype=jnp.float32,
    groups: Mapping[str, object] | None = None,
) -> Dataset:
    """Pad recordings of different lengths, and optionally cut them into overlapping segments.

    **Arguments:**

    - `recordings`: `{name: array (T_i, D)}`; a frame with any NaN or inf entry is missing.
    - `nlags`: the model's autoregressive order `L`. The first `nlags` frames of each row
      serve only as lags, as do the `nlags` frames after a gap.
    - `segment_length`: cut recordings longer than this into rows of this many frames
      (bounds the padding and lets long recordings be processed in parallel). `None`:
      one row per recording, padded to the longest.
    - `overlap`: frames shared by consecutive segments, `nlags <= overlap < segment_length`.
      The first `nlags` frames of a segment are lag-only context: they carry no state there,
      and the regressors of the frames after them are complete, so with the default
      `overlap = nlags` every frame carries a state in exactly one row and enters the
      likelihood once (the only approximation of cutting is that each segment's chain starts
      afresh, with a uniform first state, instead of continuing the previous segment's). A
      larger overlap buys state estimates near the cuts from a segment that sees both sides
      (`Dataset.unbatch` keeps each frame from the row where it is farthest from a cut), at the
      price of `overlap - nlags` frames per cut inferred twice and counted twice by the
      sampler (`Dataset.duplicated_frames` says how many).
    - `dtype`: floating dtype of `x` and `mask`.
    - `groups`: `{name: group label}`, one label for every recording (genotype, treatment,
      ...), for a model with one transition matrix per group. The labels are sorted (as
      strings) and numbered `0 .. G-1`; every row gets its recording's number in
      `Dataset.groups` (pass it as `groups=` to `ARHMM.from_prior`, and `Dataset.num_groups`
      as `Hyperparams(..., num_groups=)`); `Dataset.group_names` keeps the labels.

    **Returns:**

    A `Dataset`. The last segment of a recording (or a short recording) is padded with
    `mask = 0`; rows without any valid frame (segments inside a long gap) are dropped.
    """
    recs = _as_recordings(recordings)
    nlags = check_int("nlags", nlags)
    if segment_length is not None:
        if overlap is None:
            overlap = nlags
        if not (isinstance(segment_length, int) and isinstance(overlap, int) and nlags <= overlap < segment_length):
            raise ValueError(
                f"need integers with nlags <= overlap < segment_length; got nlags = {nlags}, overlap = {overlap}, "
                f"segment_length = {segment_length}. The first nlags frames of a segment only serve as lags."
            )
    elif overlap is not None:
        raise ValueError("`overlap` is only used with `segment_length`; pass both or neither.")
    rows, segments, valid_rows = [], [], []
    for index, (name, rec) in enumerate(recs.items()):
        T_i = rec.shape[0]
        observed = np.all(np.isfinite(rec), axis=1)
        valid = _observed_and_lags(observed, nlags)
        if T_i <= nlags or not valid[nlags:].any():
            raise ValueError(
                f"recording {name!r} has no frame with {nlags} observed frames before it (it has {T_i} frames, "
                f"{int(observed.sum())} observed); it needs at least nlags + 1 = {nlags + 1} consecutive observed "
                "frames. Drop it or lower `nlags`."
            )
        spans = _plan_segments(T_i, nlags, segment_length, overlap or 0)
        # frames of an overlap up to its midpoint come from the earlier segment, the rest from the later one
        cuts = [(a_stop - 1 + b_start + nlags) // 2 + 1 for (_, a_stop), (b_start, _) in zip(spans, spans[1:])]
        keep = [nlags, *cuts, T_i]
        for j, (start, stop) in enumerate(spans):
            row_valid = valid[start:stop].copy()
            row_valid[:nlags] = observed[start : start + nlags]
            if not row_valid[nlags:].any():
                continue
            rows.append(np.where(observed[start:stop, None], rec[start:stop], 0.0))
            valid_rows.append(row_valid)
            segments.append(Segment(index, start, stop, keep[j], keep[j + 1]))
    T = max(r.shape[0] for r in rows)
    D = rows[0].shape[1]
    x = np.zeros((len(rows), T, D), dtype)
    mask = np.zeros((len(rows), T), dtype)
    for n, (r, v) in enumerate(zip(rows, valid_rows)):
        x[n, : r.shape[0]] = r
        mask[n, : r.shape[0]] = v
    group_index, group_names = _group_labels(groups, recs)
    row_groups = None if groups is None else jnp.asarray([group_index[s.recording] for s in segments], jnp.int32)
    return Dataset(
        x=jnp.asarray(x), mask=jnp.asarray(mask), nlags=nlags, names=tuple(recs),
        lengths=tuple(r.shape[0] for r in recs.values()), segments=tuple(segments),
        groups=row_groups, group_names=group_names,
    )


def _group_labels(groups: Mapping[str, object] | None, recs: dict) -> tuple[list[int] | None, tuple[str, ...] | None]:
    """The group number of every recording (in the order of `recs`) and the sorted labels."""
    if groups is None:
        return None, None
    if not isinstance(groups, Mapping):
        raise TypeError(f"`groups` must be a mapping {{recording name: group label}}; got {type(groups).__name__}.")
    missing = [name for name in recs if name not in groups]
    unknown = [name for name in groups if name not in recs]
    if missing or unknown:
        raise ValueError(
            "`groups` must give a group to every recording and name no other: "
            + (f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unknown {unknown[:5]}{' ...' if len(unknown) > 5 else ''}" if unknown else "")
            + f". The recordings are {list(recs)[:5]}{' ...' if len(recs) > 5 else ''}."
        )
    labels = {name: str(groups[name]) for name in recs}
    names = tuple(sorted(set(labels.values())))
    number = {label: i for i, label in enumerate(names)}
    return [number[labels[name]] for name in recs], names


def load_recordings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read recordings from an `.npz` file (one array per name) or an `.h5`/`.hdf5` file (one
    dataset per recording, in nested groups named by their '/'-joined path).

    **Returns:** `{name: float array (T_i, D)}`. Raises a one-line error for a missing file,
    an unknown extension, an array that is not 2-D, or recordings of different `D`.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npz", ".h5", ".hdf5"):
        raise ValueError(f"cannot read {path!r}: expected a .npz, .h5 or .hdf5 file; got extension {ext!r}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"recordings file {path!r} does not exist.")
    from ._files import read_arrays

    recs = read_arrays(path)
    if not recs:
        raise ValueError(f"{path!r} holds no arrays.")
    try:
        return _as_recordings(recs)
    except (ValueError, TypeError) as e:
        raise type(e)(f"in {path!r}: {e}") from None


class Standardizer(eqx.Module):
    """An affine map `y = (x - mean) @ matrix.T`, fitted on some recordings and applied to others.

    From `standardize` (`matrix = diag(1 / std)`) or `whiten` (PCA whitening). Fields are
    float64 NumPy arrays: save them with `np.savez(path, mean=s.mean, matrix=s.matrix)`
    and rebuild with `Standardizer(mean=..., matrix=...)`.
    """

    mean: Float[np.ndarray, " D"]
    matrix: Float[np.ndarray, "E D"]

    def apply(self, recordings: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """Transform `{name: (T_i, D)}` to `{name: (T_i, E)}`; a missing frame (any NaN/inf entry) becomes NaN."""
        recs = _as_recordings(recordings)
        D = self.mean.shape[0]
        for name, rec in recs.items():
            if rec.shape[1] != D:
                raise ValueError(f"recording {name!r} has D = {rec.shape[1]}; the transform was fitted with D = {D}.")
        return {name: _affine(rec, self.matrix, -self.mean @ self.matrix.T) for name, rec in recs.items()}

    def invert(self, recordings: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """Map transformed recordings `(T_i, E)` back to the original space `(T_i, D)` (through
        the pseudo-inverse, which projects onto the kept components when `E < D`)."""
        recs = _as_recordings(recordings)
        E = self.matrix.shape[0]
        for name, rec in recs.items():
            if rec.shape[1] != E:
                raise ValueError(f"recording {name!r} has D = {rec.shape[1]} but the transform outputs {E} dimensions.")
        back = np.linalg.pinv(self.matrix)
        return {name: _affine(rec, back, self.mean) for name, rec in recs.items()}


def _affine(rec: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """`rec @ matrix.T + offset` on the observed frames; missing frames (any non-finite entry) become NaN."""
    observed = np.all(np.isfinite(rec), axis=1)
    out = np.full((rec.shape[0], matrix.shape[0]), np.nan)
    out[observed] = rec[observed] @ matrix.T + offset
    return out


def _valid_frames(recs: dict[str, np.ndarray]) -> np.ndarray:
    """All observed frames (no NaN/inf entry) of all recordings, stacked `(M, D)`."""
    frames = np.concatenate([rec[np.all(np.isfinite(rec), axis=1)] for rec in recs.values()])
    if frames.shape[0] < 2:
        raise ValueError(f"need at least 2 observed frames over all recordings to fit a transform; got {len(frames)}.")
    return frames


EXTREME = 100.0  # robust standard deviations from the median beyond which `standardize` leaves a value out


def _robust_centre_and_spread(v: np.ndarray) -> tuple[float, float]:
    """Median and a spread that one glitch cannot move: 1.4826 MAD, else IQR / 1.349 (more than
    half the values equal), else the mean absolute deviation; 0 only for a constant `v`."""
    med = np.median(v)
    dev = np.abs(v - med)
    spread = 1.4826 * np.median(dev)
    if not spread > 0:
        q75, q25 = np.percentile(v, [75, 25])
        spread = (q75 - q25) / 1.349
    if not spread > 0:
        top = dev.max()
        spread = top * np.mean(dev / top) if top > 0 else 0.0
    return float(med), float(spread)


def standardize(recordings: Mapping[str, ArrayLike]) -> tuple[dict[str, np.ndarray], Standardizer]:
    """Centre each dimension and scale it to unit standard deviation, with the mean and
    standard deviation over the observed frames of all recordings (missing frames ignored).

    Values more than `EXTREME` (100) robust standard deviations (1.4826 times the median
    absolute deviation) from the median of their dimension are left out of that mean and
    standard deviation, with a `RuntimeWarning` naming the first such frame (recording, frame,
    dimension): one glitch (say 1e10), or one recording in another unit, cannot shrink the
    scale of a dimension for all the others. On data without such values this is the plain
    mean and standard deviation.

    **Returns:** `(standardised recordings, Standardizer)`; apply the same transform to new
    recordings with `standardizer.apply(new)`. A constant dimension is only centred. Raises
    a `ValueError` naming the dimension when its scale would be zero or not finite.
    """
    recs = _as_recordings(recordings)
    frames = _valid_frames(recs)
    D = frames.shape[1]
    mean, scale = np.zeros(D), np.ones(D)
    extreme = np.zeros(frames.shape[0], bool)
    first = None
    for d in range(D):
        v = frames[:, d]
        med, spread = _robust_centre_and_spread(v)
        if not np.isfinite(spread):
            raise ValueError(f"dimension {d} of the recordings cannot be standardised: its values span more than "
                             "the floating-point range.")
        if spread == 0:  # constant: only centred
            mean[d] = med
            continue
        out = np.abs(v - med) > EXTREME * spread
        if out.any() and first is None:
            first = (int(np.argmax(out)), d)
        extreme |= out
        u = (v[~out] - med) / spread  # in units of the spread: no overflow for values near 1e300
        mean[d] = med + spread * u.mean()
        std = spread * u.std()
        with np.errstate(over="ignore", divide="ignore"):
            scale[d] = 1.0 / std if std > 0 else 1.0
        if not (np.isfinite(scale[d]) and scale[d] > 0 and np.isfinite(mean[d])):
            raise ValueError(f"dimension {d} of the recordings cannot be standardised: its standard deviation "
                             f"{std:g} gives the scale {scale[d]:g}; rescale the data (e.g. to other units).")
    if first is not None:
        row, d = first
        names = [name for name, rec in recs.items() for _ in range(int(np.all(np.isfinite(rec), axis=1).sum()))]
        frame_of = np.concatenate([np.flatnonzero(np.all(np.isfinite(rec), axis=1)) for rec in recs.values()])
        warnings.warn(
            f"{int(extreme.sum())} frame(s) hold values more than {EXTREME:g} robust standard deviations from the "
            f"median of their dimension, first recording {names[row]!r} frame {int(frame_of[row])} (dimension {d}, "
            f"value {frames[row, d]:g}); they are left out of the mean and scale. Check the data for glitches.",
            RuntimeWarning, stacklevel=2,
        )
    transform = Standardizer(mean=mean, matrix=np.diag(scale))
    return transform.apply(recs), transform


def whiten(
    recordings: Mapping[str, ArrayLike], *, num_components: int | None = None, eps: float = 1e-8
) -> tuple[dict[str, np.ndarray], Standardizer]:
    """PCA whitening: project onto the principal axes of the observed frames (largest variance
    first) and scale each to unit variance, so the output has identity covariance.

    **Arguments:** `num_components`: keep only this many leading components (default all);
    `eps`: components with variance below `eps` times the largest are dropped.

    **Returns:** `(whitened recordings, Standardizer)`.
    """
    recs = _as_recordings(recordings)
    frames = _valid_frames(recs)
    mean = frames.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(frames - mean, rowvar=False).reshape(mean.size, mean.size))
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    keep = evals > eps * evals[0]
    if num_components is not None:
        if not 1 <= num_components <= mean.size:
            raise ValueError(f"`num_components` must be between 1 and D = {mean.size}; got {num_components}.")
        keep[num_components:] = False
    transform = Standardizer(mean=mean, matrix=evecs[:, keep].T / np.sqrt(evals[keep])[:, None])
    return transform.apply(recs), transform
