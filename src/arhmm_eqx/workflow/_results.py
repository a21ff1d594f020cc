"""After the fit: state usages, durations and transitions, relabelling, averaged marginals, result files."""

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._custom_types import Array, ArrayLike, Float
from .._model import ARHMM
from .._params import Params
from .._states import States
from .._summaries import run_starts
from ._data import Dataset
from ._files import atomic_write


def _as_zv(z, valid) -> tuple[np.ndarray, np.ndarray]:
    """`z` as a 2-D int array and `valid` as a bool array of the same shape (default `z >= 0`)."""
    z = np.asarray(z)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"`z` must be an integer array of shape (N, Tz) or (Tz,); got {z.dtype} {z.shape}.")
    valid = z >= 0 if valid is None else np.asarray(valid).reshape(z.shape) > 0
    return z, valid


def state_usages(z: ArrayLike, valid: ArrayLike | None, num_states: int) -> np.ndarray:
    """Fraction of valid frames in each state, shape `(K,)` (sums to 1 when any frame is valid).

    `z`: states `(N, Tz)` (or `(Tz,)`); `valid`: same shape, True where the frame counts
    (e.g. `mask[:, nlags:] > 0`); `None` means `z >= 0` (for the -1-filled output of `Dataset.unbatch`).
    """
    z, valid = _as_zv(z, valid)
    if np.any(z[valid] < 0):
        raise ValueError("`z` has negative states on frames that `valid` counts; pass `valid=None` to skip "
                         "frames without a state (-1, as `Dataset.unbatch` fills them), or the model's valid frames.")
    counts = np.bincount(z[valid], minlength=num_states).astype(np.float64)
    if counts.size > num_states:
        raise ValueError(f"`z` has state {int(z[valid].max())}, which is not below `num_states` = {num_states}.")
    total = counts.sum()
    return counts / total if total > 0 else counts


def runs(z: ArrayLike, valid: ArrayLike | None = None) -> dict[str, np.ndarray]:
    """Every run (maximal stretch of one state among consecutive valid frames), in order.

    **Returns:** `{"sequence", "start", "state", "duration"}`, one entry per run: the row of
    `z`, the index of its first frame in the row, its state and its length in frames. A
    masked gap or the end of a row ends a run (runs are cut there, as in `GibbsInfo.median_duration`).
    """
    z, valid = _as_zv(z, valid)
    starts = np.asarray(run_starts(jnp.asarray(z, jnp.int32), jnp.asarray(valid)))
    seq, start = np.nonzero(starts)
    run_id = np.cumsum(starts.reshape(-1)) - 1
    durations = np.bincount(run_id[valid.reshape(-1)], minlength=seq.size) if seq.size else np.zeros(0, int)
    return {"sequence": seq, "start": start, "state": z[seq, start], "duration": durations}


def state_durations(z: ArrayLike, valid: ArrayLike | None = None) -> np.ndarray:
    """Lengths in frames of all runs of `z` over valid frames, in order of occurrence (see `runs`)."""
    return runs(z, valid)["duration"]


def transition_matrix(
    z: ArrayLike, valid: ArrayLike | None, num_states: int, *, normalize: bool = True, self_transitions: bool = True
) -> np.ndarray:
    """Empirical transitions `(K, K)` between consecutive frames that are both valid.

    `normalize`: divide each row by its sum (rows of unvisited states stay 0); otherwise
    counts. `self_transitions=False` drops the diagonal before normalising, leaving the
    syllable-to-syllable transitions: `P[i, j]` is then the probability that a run of `i`
    is followed by a run of `j`.
    """
    z, valid = _as_zv(z, valid)
    both = valid[:, 1:] & valid[:, :-1]
    if z.size and (z[valid].max(initial=0) >= num_states):
        raise ValueError(f"`z` has state {int(z[valid].max())}, which is not below `num_states` = {num_states}.")
    counts = np.zeros((num_states, num_states))
    np.add.at(counts, (z[:, :-1][both], z[:, 1:][both]), 1.0)
    if not self_transitions:
        np.fill_diagonal(counts, 0.0)
    if not normalize:
        return counts
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)


def relabel_by_usage(model: ARHMM, mask: ArrayLike) -> tuple[ARHMM, np.ndarray]:
    """Renumber the states so that state 0 is the most used (ties keep their order).

    `Ab`, `Q`, `betas`, the rows and columns of `pi`, and `z` are permuted together, so
    every likelihood is unchanged. Usage counts the valid frames (`mask[:, nlags:] > 0`).

    **Returns:** `(relabelled model, perm)` with `perm[new] = old`: new state `i` is old state `perm[i]`.
    """
    if model.params.Ab.ndim != 3:
        raise ValueError("`relabel_by_usage` takes one model; index a batch of models first (`model[i]` per leaf).")
    hp, p, z = model.hyperparams, model.params, np.asarray(model.states.z)
    K, L = hp.num_states, hp.nlags
    mask = np.asarray(mask)
    if mask.shape != (z.shape[0], z.shape[1] + L):
        raise ValueError(f"`mask` must have shape (N, T) = {(z.shape[0], z.shape[1] + L)}; got {mask.shape}.")
    counts = np.bincount(z[mask[:, L:] > 0], minlength=K)
    perm = np.argsort(-counts, kind="stable")
    inverse = np.empty(K, np.int32)
    inverse[perm] = np.arange(K, dtype=np.int32)
    idx = jnp.asarray(perm)
    pi = p.pi[idx][:, idx] if p.pi.ndim == 2 else p.pi[:, idx][:, :, idx]  # (G, K, K): every group's matrix
    params = Params(Ab=p.Ab[idx], Q=p.Q[idx], pi=pi, betas=p.betas[idx],
                    nu=None if p.nu is None else p.nu[idx])  # a robust model's nu follows its states
    states = States(z=jnp.asarray(inverse)[model.states.z].astype(model.states.z.dtype), groups=model.states.groups,
                    tau=model.states.tau)
    return ARHMM(hp, params, states), perm


@eqx.filter_jit
def _sum_marginals(models: ARHMM, x, mask):
    dynamic, static = eqx.partition(models, eqx.is_array)

    def body(total, leaves):
        m = eqx.combine(leaves, static)
        return total + m.stateseq_marginals(x, mask), None

    _, K, _, _ = models.params.Ab.shape
    N, T, _ = x.shape
    zeros = jnp.zeros((N, T - models.hyperparams.nlags, K), models.params.Ab.dtype)
    total, _ = lax.scan(body, zeros, dynamic)
    return total


def average_marginals(models: ARHMM | Sequence[ARHMM], x: Float[Array, "N T D"], mask: ArrayLike) -> Array:
    """Smoothed `p(z[t] | x, params)` averaged over posterior samples, shape `(N, T - nlags, K)`.

    `models`: a batch of models with a leading axis (from `eqx.filter_vmap`, e.g. several
    chains, or samples saved along one chain and stacked), or a list of models of the same
    sizes. The samples are processed one at a time (a `lax.scan`), so memory does not grow
    with their number.
    """
    if isinstance(models, ARHMM):
        if models.params.Ab.ndim == 3:
            return models.stateseq_marginals(x, mask)
        batch = models
    else:
        models = list(models)
        if not models:
            raise ValueError("`models` is empty; pass at least one model.")
        batch = jax.tree.map(lambda *a: jnp.stack(a), *models)
    total = _sum_marginals(batch, jnp.asarray(x), jnp.asarray(mask))
    return total / jnp.asarray(batch.params.Ab.shape[0], total.dtype)


class Results(eqx.Module):
    """What a fit says about the recordings (all NumPy).

    - `states`: `{name: (T_i,)}` the state of every frame, -1 where there is none.
    - `marginals`: `{name: (T_i, K)}` smoothed state probabilities (NaN where no state), or `None`.
    - `usages` `(K,)`, `transition_counts` `(K, K)` (consecutive valid frames),
      `runs` (see `runs`, with `sequence` indexing `names`), `names`, `num_states`.
    - `concentrations`: `{"alpha", "gamma", "kappa"}` of the model when it learns them
      (`Hyperparams.concentrations`), else `None`.
    """

    names: tuple[str, ...]
    num_states: int
    states: dict[str, np.ndarray]
    usages: np.ndarray
    transition_counts: np.ndarray
    runs: dict[str, np.ndarray]
    marginals: dict[str, np.ndarray] | None = None
    # With groups (`prepare_recordings(..., groups=)`): `{recording: group label}`, and per
    # group label its usages `(K,)`, transition counts `(K, K)` and the model's `pi[g]` `(K, K)`.
    groups: dict[str, str] | None = None
    group_usages: dict[str, np.ndarray] | None = None
    group_transition_counts: dict[str, np.ndarray] | None = None
    group_pi: dict[str, np.ndarray] | None = None
    concentrations: dict[str, float] | None = None

    @property
    def durations(self) -> np.ndarray:
        """Lengths in frames of all runs."""
        return self.runs["duration"]

    def transition_matrix(self, *, self_transitions: bool = True) -> np.ndarray:
        """Row-normalised transitions (see `transition_matrix`)."""
        counts = self.transition_counts.copy()
        if not self_transitions:
            np.fill_diagonal(counts, 0.0)
        rows = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)


def _padded(states: dict[str, np.ndarray]) -> np.ndarray:
    longest = max(s.shape[0] for s in states.values())
    z = np.full((len(states), longest), -1, np.int64)
    for i, s in enumerate(states.values()):
        z[i, : s.shape[0]] = s
    return z


def summarize(model: ARHMM, dataset: Dataset, *, marginals: bool | ArrayLike = False) -> Results:
    """States per recording, usages, durations and transitions of a fitted `model`.

    Statistics are computed on the recordings (after `Dataset.unbatch`), so a run that
    crosses a segment boundary counts once. `marginals`: `True` to add the model's smoothed
    marginals, or an array `(N, T - nlags, K)` to use (e.g. from `average_marginals`).
    """
    if model.params.Ab.ndim != 3:
        raise ValueError("`summarize` takes one model; pick one from the batch (or average marginals separately).")
    K = model.hyperparams.num_states
    states = dataset.unbatch(np.asarray(model.states.z))
    z = _padded(states)
    if marginals is True:
        marginals = model.stateseq_marginals(dataset.x, dataset.mask)
    unbatched = None if marginals is False else dataset.unbatch(np.asarray(marginals))
    hp = model.hyperparams
    learned = None if hp.concentrations is None else {k: float(getattr(hp, k)) for k in ("alpha", "gamma", "kappa")}
    return Results(
        names=dataset.names, num_states=K, states=states, usages=state_usages(z, None, K),
        transition_counts=transition_matrix(z, None, K, normalize=False), runs=runs(z, None), marginals=unbatched,
        **_group_summaries(model, dataset, states),
        concentrations=learned,
    )


def _group_summaries(model: ARHMM, dataset: Dataset, states: dict[str, np.ndarray]) -> dict:
    """The per-group fields of `Results` (none without groups): usages and transition counts of
    each group's recordings, and the model's transition matrix of each group."""
    if dataset.group_names is None:
        return {}
    if model.hyperparams.num_groups != dataset.num_groups:
        raise ValueError(
            f"`dataset` has {dataset.num_groups} groups but the model has num_groups = "
            f"{model.hyperparams.num_groups}; fit the model with `Hyperparams(..., num_groups=dataset.num_groups)`."
        )
    K = model.hyperparams.num_states
    of = dataset.recording_groups()
    pi = np.asarray(model.params.pi)
    usages, counts, pis = {}, {}, {}
    for g, label in enumerate(dataset.group_names):
        members = {n: s for n, s in states.items() if of[n] == label}
        z = _padded(members) if members else np.full((1, 1), -1, np.int64)
        usages[label] = state_usages(z, None, K)
        counts[label] = transition_matrix(z, None, K, normalize=False)
        pis[label] = pi[g]
    return dict(groups=of, group_usages=usages, group_transition_counts=counts, group_pi=pis)


def save_results(results: Results, out_dir: str | os.PathLike) -> list[Path]:
    """Write `results` to `out_dir` (created if needed) and return the paths written:

    - `results.npz`: `names`, `usages`, `transition_counts`, `transition_matrix`, the run
      table (`run_sequence`, `run_start`, `run_state`, `run_duration`), and one array
      `states/<name>` (and `marginals/<name>`) per recording; with learned concentrations
      also `concentration_alpha`, `concentration_gamma`, `concentration_kappa`;
    - `states.csv`: columns `recording, frame, state` (state -1 where a frame has none);
    - `usages.csv`: `state, frames, usage, runs, median_duration` (durations in frames);
    - `durations.csv`: one row per run: `recording, start, state, duration`;
    - `transitions.csv`: the row-normalised `(K, K)` transition matrix, `from_state` then one column per state;
    - with groups, `group_usages.csv` (`group, state, usage`) and in `results.npz`
      `group_of_recording` and, per group label, `group_usages/<g>`,
      `group_transition_counts/<g>`, `group_transition_matrix/<g>` and the model's `group_pi/<g>`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r, K = results, results.num_states
    arrays = {
        "names": np.asarray(r.names), "usages": r.usages, "transition_counts": r.transition_counts,
        "transition_matrix": r.transition_matrix(), **{f"run_{k}": v for k, v in r.runs.items()},
        **{f"states/{n}": s for n, s in r.states.items()},
    }
    if r.marginals is not None:
        arrays.update({f"marginals/{n}": m for n, m in r.marginals.items()})
    if r.groups is not None:  # per group: usages, empirical transitions and the model's pi[g]
        arrays["group_of_recording"] = np.asarray([r.groups[n] for n in r.names])
        for label in r.group_usages:
            c = r.group_transition_counts[label]
            rows = c.sum(axis=1, keepdims=True)
            arrays[f"group_usages/{label}"] = r.group_usages[label]
            arrays[f"group_transition_counts/{label}"] = c
            arrays[f"group_transition_matrix/{label}"] = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
            arrays[f"group_pi/{label}"] = r.group_pi[label]
    if r.concentrations is not None:  # the learned values, as `concentration_alpha`, ...
        arrays.update({f"concentration_{k}": np.asarray(v) for k, v in r.concentrations.items()})
    paths = [out / name for name in ("results.npz", "states.csv", "usages.csv", "durations.csv", "transitions.csv")]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(paths[0], buffer.getvalue())  # replaces, never writes through, a link at the path
    counts = np.bincount(np.concatenate([s[s >= 0] for s in r.states.values()]), minlength=K)
    run_state, run_len = r.runs["state"], r.runs["duration"]
    tables = {
        paths[1]: (["recording", "frame", "state"],
                   [(n, t, int(v)) for n, s in r.states.items() for t, v in enumerate(s)]),
        paths[2]: (["state", "frames", "usage", "runs", "median_duration"],
                   [(k, int(counts[k]), f"{r.usages[k]:.6g}", int((run_state == k).sum()),
                     f"{np.median(run_len[run_state == k]):g}" if (run_state == k).any() else "")
                    for k in range(K)]),
        paths[3]: (["recording", "start", "state", "duration"],
                   [(r.names[i], int(s), int(k), int(d)) for i, s, k, d in zip(*(r.runs[c] for c in
                    ("sequence", "start", "state", "duration")))]),
        paths[4]: (["from_state", *range(K)], [(k, *(f"{v:.6g}" for v in row)) for k, row in
                                                  enumerate(r.transition_matrix())]),
    }
    if r.groups is not None:
        group_path = out / "group_usages.csv"
        paths.append(group_path)
        tables[group_path] = (["group", "state", "usage"],
                              [(label, k, f"{u[k]:.6g}") for label, u in r.group_usages.items() for k in range(K)])
    for path, (header, rows) in tables.items():
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(rows)
        atomic_write(path, text.getvalue().encode())
    return paths
