"""Each plot returns a Figure with the expected axes and artists, and saves a non-empty PNG."""

import matplotlib


matplotlib.use("Agg")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure

import arhmm_eqx as ae


def _info(iters=30, chains=None):
    """A stacked `GibbsInfo` as `run_chain` returns it (built under vmap, like a scan's output)."""
    shape = (iters,) if chains is None else (chains, iters)
    rng = np.random.default_rng(0)
    fields = (
        jnp.asarray(np.cumsum(rng.random(shape), axis=-1), jnp.float32),
        jnp.zeros(shape),
        jnp.asarray(rng.integers(5, 10, shape), jnp.int32),
        jnp.asarray(rng.integers(3, 9, shape), jnp.float32),
        jnp.ones(shape, bool),
    )
    build = ae.GibbsInfo
    for _ in shape:
        build = jax.vmap(build)
    return build(*fields)


def _lines(ax):
    return len(ax.get_lines())


def test_traces():
    fig = ae.workflow.plot_traces(_info())
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert [_lines(ax) for ax in fig.axes] == [1, 1, 1]
    assert fig.axes[-1].get_xlabel() == "Gibbs sweep"
    fig = ae.workflow.plot_traces(_info(chains=4))
    assert [_lines(ax) for ax in fig.axes] == [4, 4, 4]
    fig = ae.workflow.plot_traces({"log_joint_x": np.arange(5.0), "num_states_used": np.arange(5)}, start_iter=10)
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), np.arange(11, 16))
    with pytest.raises(ValueError, match="none of the fields"):
        ae.workflow.plot_traces({"other": np.arange(3)})


def test_state_raster():
    states = {"a": np.array([-1, -1, 0, 0, 3, 3, 3, -1, 2]), "b": np.array([-1, -1, 1, 1])}
    fig = ae.workflow.plot_state_raster(states, num_states=4)
    (ax,) = fig.axes
    (image,) = ax.get_images()
    raster = np.asarray(image.get_array())
    assert raster.shape == (2, 9)
    np.testing.assert_array_equal(raster[1], [0, 0, 2, 2, 0, 0, 0, 0, 0])  # 0 = white: no state
    assert image.cmap(image.norm(0))[:3] == (1.0, 1.0, 1.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    fig = ae.workflow.plot_state_raster(np.zeros((3, 5000), int), max_frames=100, fps=30.0)
    assert np.asarray(fig.axes[0].get_images()[0].get_array()).shape == (3, 100)
    assert fig.axes[0].get_xlabel() == "time (s)"


@pytest.mark.parametrize("K", [5, 15, 100])
def test_state_colors_distinct(K):
    colors = ae.workflow.state_colors(K)
    assert colors.shape == (K, 4)
    assert len({tuple(np.round(c, 6)) for c in colors}) == K


def test_usages_durations_transitions_kappa():
    usages = np.array([0.1, 0.0, 0.6, 0.3])
    fig = ae.workflow.plot_usages(usages)
    assert len(fig.axes[0].patches) == 4
    fig = ae.workflow.plot_usages(usages, sort=True)
    assert [p.get_height() for p in fig.axes[0].patches] == [0.6, 0.3, 0.1]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["2", "3", "0"]
    durations = np.random.default_rng(1).geometric(0.1, 500)
    fig = ae.workflow.plot_durations(durations, fps=30.0)
    ax = fig.axes[0]
    assert len(ax.patches) > 10 and ax.get_xlabel() == "duration (s)"
    assert ax.get_lines()[0].get_xdata()[0] == pytest.approx(np.median(durations) / 30.0)
    P = np.random.default_rng(2).dirichlet(np.ones(30), 30)
    fig = ae.workflow.plot_transition_matrix(P, max_states=12)
    assert len(fig.axes) == 2  # the matrix and its colour bar
    assert fig.axes[0].get_images()[0].get_array().shape == (12, 12)
    kappas = np.array([1e2, 1e3, 1e4])
    meds = np.array([[3.0, 4.0], [8.0, 9.0], [30.0, 28.0]])
    fig = ae.workflow.plot_kappa_scan(kappas, meds, target=10.0)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.collections[0].get_offsets()) == 6
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [3.5, 8.5, 29.0])
    assert ax.get_lines()[1].get_ydata()[0] == 10.0  # the target line
    with pytest.raises(ValueError, match="do not match"):
        ae.workflow.plot_kappa_scan(kappas, np.ones(4))
    with pytest.raises(ValueError, match="square"):
        ae.workflow.plot_transition_matrix(np.ones((2, 3)))
    with pytest.raises(ValueError, match="no recordings"):
        ae.workflow.plot_state_raster({})


def test_save_figures(tmp_path):
    figs = {"traces": ae.workflow.plot_traces(_info()), "usages": ae.workflow.plot_usages(np.array([0.5, 0.5]))}
    paths = ae.workflow.save_figures(figs, tmp_path / "figs")
    assert [p.name for p in paths] == ["traces.png", "usages.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    with pytest.raises(ValueError, match="plain file names"):
        ae.workflow.save_figures({"a/b": figs["traces"]}, tmp_path)
