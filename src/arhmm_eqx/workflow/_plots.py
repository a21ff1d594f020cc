"""Figures of a fit: sampler traces, state rasters, usages, durations, transitions, kappa scans.

Every function takes plain arrays and returns a `matplotlib.figure.Figure` built without
`pyplot` (so nothing is shown or kept open); save with `save_figures` or `fig.savefig`,
or show it in a notebook with `display(fig)`.
"""

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap, hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from .._custom_types import ArrayLike
from ._files import atomic_write


_TRACE_PANELS = (
    ("log_joint_x", "log p(x | z, params)"),
    ("num_states_used", "states used"),
    ("median_duration", "median duration (frames)"),
    # in the trace only when the model learns its concentrations (`ConcentrationPrior`)
    ("alpha", "alpha"),
    ("gamma", "gamma"),
    ("kappa", "kappa"),
)


def state_colors(num_states: int) -> np.ndarray:
    """`(K, 4)` RGBA colours, one per state: `tab10`/`tab20` up to 20 states, beyond that hues
    spaced by the golden ratio with three levels of brightness, so neighbouring states differ."""
    from matplotlib import colormaps

    if num_states <= 10:
        return colormaps["tab10"](np.arange(num_states))
    if num_states <= 20:
        return colormaps["tab20"](np.arange(num_states))
    k = np.arange(num_states)
    hsv = np.stack([(k * 0.618034) % 1.0, 0.55 + 0.45 * ((k // 3) % 2), 1.0 - 0.25 * (k % 3)], axis=1)
    return np.concatenate([hsv_to_rgb(hsv), np.ones((num_states, 1))], axis=1)


def plot_traces(infos, *, start_iter: int = 0) -> Figure:
    """Sampler traces against the sweep: `log_joint_x`, `num_states_used` and, if present,
    `median_duration` and the learned concentrations `alpha`, `gamma`, `kappa`, one panel each.

    `infos`: a stacked `GibbsInfo` (from `run_chain`) or a dict of arrays with those keys;
    each of shape `(iters,)`, or `(chains, iters)` for one line per chain.
    """
    get = infos.get if isinstance(infos, Mapping) else lambda k: getattr(infos, k, None)
    panels = [(k, label, np.asarray(get(k))) for k, label in _TRACE_PANELS if get(k) is not None]
    if not panels:
        raise ValueError("`infos` has none of the fields log_joint_x, num_states_used, median_duration.")
    fig = Figure(figsize=(7, 1.9 * len(panels) + 0.4), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (_, label, values) in zip(axes, panels):
        values = np.atleast_2d(values)
        sweeps = start_iter + 1 + np.arange(values.shape[-1])
        for chain in values.reshape(-1, values.shape[-1]):
            ax.plot(sweeps, chain, lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("Gibbs sweep")
    return fig


def plot_state_raster(
    states: Mapping[str, ArrayLike] | ArrayLike,
    *,
    num_states: int | None = None,
    max_frames: int | None = 3000,
    fps: float | None = None,
) -> Figure:
    """One row per recording, each frame coloured by its state; frames without a state white.

    `states`: `{name: (T_i,)}` (as from `Dataset.unbatch`, -1 for no state) or an `(N, Tz)`
    array; `max_frames`: show only the first frames; `fps`: label time in seconds.
    """
    if isinstance(states, Mapping):
        names, seqs = list(states), [np.asarray(s).reshape(-1) for s in states.values()]
    else:
        arr = np.asarray(states)
        if arr.ndim != 2:
            raise ValueError(f"`states` must be a dict of 1-D arrays or an (N, Tz) array; got shape {arr.shape}.")
        names, seqs = [str(i) for i in range(arr.shape[0])], list(arr)
    if not seqs:
        raise ValueError("`states` holds no recordings; pass at least one state sequence.")
    longest = max(s.shape[0] for s in seqs)
    width = longest if max_frames is None else min(longest, max_frames)
    raster = np.full((len(seqs), width), -1)
    for i, s in enumerate(seqs):
        raster[i, : min(width, s.shape[0])] = s[:width]
    K = int(raster.max()) + 1 if num_states is None else num_states
    cmap = ListedColormap(np.concatenate([np.ones((1, 4)), state_colors(max(K, 1))]))
    fig = Figure(figsize=(9, 0.35 * len(seqs) + 1.4), layout="constrained")
    ax = fig.subplots()
    scale = 1.0 / fps if fps else 1.0
    ax.imshow(raster + 1, cmap=cmap, vmin=-0.5, vmax=K + 0.5, aspect="auto", interpolation="nearest",
              extent=(-0.5 * scale, (width - 0.5) * scale, len(seqs) - 0.5, -0.5))
    ax.set_yticks(np.arange(len(seqs)), names if len(seqs) <= 40 else None)
    if len(seqs) > 40:
        ax.set_yticks([])
    ax.set_xlabel("time (s)" if fps else "frame")
    ax.set_title(f"state of each frame ({K} states; white: no state)", fontsize="medium")
    return fig


def plot_usages(usages: ArrayLike, *, sort: bool = False) -> Figure:
    """Bar chart of the fraction of frames in each state (`sort=True`: most used first, bars
    labelled by their state); states never used are left out of a sorted plot."""
    usages = np.asarray(usages, dtype=float).reshape(-1)
    labels = np.arange(usages.size)
    if sort:
        labels = np.argsort(-usages, kind="stable")
        labels = labels[usages[labels] > 0]
    fig = Figure(figsize=(min(12, 2 + 0.12 * labels.size + 3), 3), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(labels.size), usages[labels], color=state_colors(usages.size)[labels], width=0.85)
    step = max(1, int(np.ceil(labels.size / 25)))
    ax.set_xticks(np.arange(0, labels.size, step), [str(v) for v in labels[::step]])
    ax.set_xlim(-0.6, labels.size - 0.4)
    ax.set_xlabel("state")
    ax.set_ylabel("fraction of frames")
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_durations(durations: ArrayLike, *, fps: float | None = None, max_quantile: float = 0.99) -> Figure:
    """Histogram of run durations (frames, or seconds with `fps`), up to the `max_quantile`
    quantile, with the median marked."""
    d = np.asarray(durations, dtype=float).reshape(-1)
    if d.size == 0:
        raise ValueError("`durations` is empty: no run to plot.")
    scale, unit = (1.0 / fps, "s") if fps else (1.0, "frames")
    top = max(np.quantile(d, max_quantile), 1.0)
    step = max(1.0, np.ceil(top / 60))
    bins = (np.arange(0.5, top + step + 0.5, step)) * scale
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.hist(np.minimum(d, top) * scale, bins=bins, color="0.45")
    median = np.median(d) * scale
    ax.axvline(median, color="C3", lw=1.5, label=f"median {median:.3g} {unit}")
    ax.set_xlabel(f"duration ({unit})")
    ax.set_ylabel("number of runs")
    ax.legend(frameon=False)
    return fig


def plot_transition_matrix(P: ArrayLike, *, max_states: int | None = None) -> Figure:
    """Heat map of a `(K, K)` transition matrix, rows "from", columns "to".

    Pass `transition_matrix(..., self_transitions=False)` to see syllable-to-syllable
    transitions. `max_states`: show only the first states (e.g. the most used after
    `relabel_by_usage`)."""
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"`P` must be a square (K, K) matrix; got shape {P.shape}.")
    if max_states is not None:
        P = P[:max_states, :max_states]
    fig = Figure(figsize=(5.6, 4.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(P, cmap="viridis", interpolation="nearest", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.85, label="probability")
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, P.shape[0]) if P.shape[0] / s <= 12)
    ax.set_xticks(np.arange(0, P.shape[0], step))
    ax.set_yticks(np.arange(0, P.shape[0], step))
    ax.set_xlabel("to state")
    ax.set_ylabel("from state")
    return fig


def plot_kappa_scan(
    kappas: ArrayLike, median_durations: ArrayLike, *, target: float | None = None, fps: float | None = None
) -> Figure:
    """Median state duration against the stickiness `kappa` (log scales), one point per chain,
    a line through the per-kappa medians, and the `target` duration as a dashed line.

    `kappas` `(C,)` with `median_durations` `(C,)` or `(C, chains)`; or both of the same shape
    (a flattened grid with repeated kappas). Durations in frames, or seconds with `fps`.
    """
    k = np.asarray(kappas, dtype=float)
    d = np.asarray(median_durations, dtype=float)
    if d.ndim == 2 and k.ndim == 1 and d.shape[0] == k.size:
        k = np.broadcast_to(k[:, None], d.shape)
    if k.shape != d.shape:
        raise ValueError(f"`kappas` {k.shape} and `median_durations` {d.shape} do not match: pass (C,) and (C,) "
                         "or (C, chains).")
    k, d = k.reshape(-1), d.reshape(-1)
    scale, unit = (1.0 / fps, "s") if fps else (1.0, "frames")
    grid = np.unique(k)
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.scatter(k, d * scale, s=18, color="C0", alpha=0.7, label="chains")
    ax.plot(grid, [np.median(d[k == g]) * scale for g in grid], color="C0", lw=1)
    if target is not None:
        ax.axhline(target, color="C3", ls="--", lw=1.2, label=f"target {target:g} {unit}")
    ax.set_xscale("log")
    if np.all(d > 0) and d.max() > 10 * d.min():  # log scale only when durations span a decade
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("kappa (stickiness)")
    ax.set_ylabel(f"median duration ({unit})")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    return fig


def save_figures(figures: Mapping[str, Figure], out_dir: str | os.PathLike, *, dpi: int = 120) -> list[Path]:
    """Write each figure to `out_dir/<name>.png` (directory created if needed); return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        if not name or os.sep in name or (os.altsep and os.altsep in name):
            raise ValueError(f"figure names must be plain file names; got {name!r}.")
        path = out / f"{name}.png"
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=dpi, format="png")
        atomic_write(path, buffer.getvalue())  # replaces, never writes through, a link at the path
        paths.append(path)
    return paths
