"""Many chains in one program: `init_chains` / `hyperparams_grid` / `run_chains` reproduce each chain
run alone with the documented keys, thinning and split runs reproduce one run, a bad chain does not
stop the others, `kappa_scan` reports the trace it ran, and the memory check refuses what cannot fit."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest
from helpers import SMALL_SIZES, small_walk

import arhmm_eqx as ae
import arhmm_eqx._memory
import arhmm_eqx._run


# The sizes used across the suite (compiled single-chain functions are shared); C = 3 chains and
# 2 sweeps everywhere, so the vmapped driver compiles once for most tests.
K, D, L, N, T = SMALL_SIZES
KAPPAS = (1.0, 1e2, 1e6)
C = len(KAPPAS)


@pytest.fixture(scope="module")
def data():
    return small_walk()


@pytest.fixture(scope="module")
def grid_models(data):
    x, mask = data
    hp = ae.hyperparams_grid(ae.Hyperparams.from_scales(K, D, L), kappa=jnp.array(KAPPAS))
    return ae.init_chains(hp, x, mask, key=jr.key(1))


def _index(tree, i):
    return jtu.tree_map(lambda v: v[i], tree)


def _assert_close(a, b, rtol=1e-6):
    """Integer leaves (states) exactly; floating leaves to float32 rounding of a reordered batched sum."""
    la, ta = jtu.tree_flatten(a)
    lb, tb = jtu.tree_flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        assert u.shape == v.shape and u.dtype == v.dtype
        if np.issubdtype(u.dtype, np.floating):
            np.testing.assert_allclose(u, v, rtol=rtol, atol=rtol)
        else:
            np.testing.assert_array_equal(u, v)


def _assert_bitwise(a, b):
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_hyperparams_grid_and_init_chains_match_single_models(data, grid_models):
    """Chain c of `init_chains` is `ARHMM.from_prior(hp_c, key=jr.split(key, C)[c])`, for a kappa grid
    and for restarts of one set of hyperparameters."""
    x, mask = data
    base = ae.Hyperparams.from_scales(K, D, L)
    keys = jr.split(jr.key(1), C)
    assert grid_models.hyperparams.kappa.shape == (C,) and grid_models.states.z.shape == (C, N, T - L)
    for c in range(C):
        hp_c = _index(grid_models.hyperparams, c)
        assert float(hp_c.kappa) == np.float32(KAPPAS[c]) and float(hp_c.alpha) == np.float32(base.alpha)
        _assert_close(_index(grid_models, c), ae.ARHMM.from_prior(hp_c, x, mask, key=keys[c]))


@pytest.mark.slow  # compiles the restart initialiser (unbatched hyperparameters)
def test_init_chains_restarts_match_single_models(data):
    x, mask = data
    base = ae.Hyperparams.from_scales(K, D, L)
    restarts = ae.init_chains(base, x, mask, key=jr.key(2), num_chains=C)
    for c, k in enumerate(jr.split(jr.key(2), C)):
        # the batched MNIW draw of a vmapped initialiser may round its products in another order
        _assert_close(_index(restarts, c), ae.ARHMM.from_prior(base, x, mask, key=k), rtol=1e-5)
    assert not np.array_equal(np.asarray(restarts.states.z[0]), np.asarray(restarts.states.z[1]))


def test_grid_and_init_errors(data):
    x, mask = data
    hp = ae.Hyperparams.from_scales(K, D, L)
    with pytest.raises(ValueError, match="same, non-zero length"):
        ae.hyperparams_grid(hp, kappa=[1.0, 2.0], alpha=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="takes grids for"):
        ae.hyperparams_grid(hp, num_states=[3, 4])
    with pytest.raises(ValueError, match="kappa"):
        ae.hyperparams_grid(hp, kappa=[1.0, -2.0])
    with pytest.raises(ValueError, match=r"S_0.*shape"):
        ae.hyperparams_grid(hp, S_0=jnp.ones((2, D + 1, D + 1)))
    with pytest.raises(ValueError, match="num_chains"):
        ae.init_chains(hp, x, mask, key=jr.key(0))
    grid = ae.hyperparams_grid(hp, kappa=[1.0, 2.0])
    with pytest.raises(ValueError, match="num_chains"):
        ae.init_chains(grid, x, mask, key=jr.key(0), num_chains=3)
    with pytest.raises(ValueError, match="already batched"):
        ae.hyperparams_grid(grid, kappa=[1.0, 2.0])


def test_run_chains_equals_each_chain_alone(data, grid_models):
    """Chain c of `run_chains(key, ...)` is `run_chain(jr.split(key, C)[c], model_c, ...)`: states and
    `ok` exactly, floats to float32 rounding (see test_reproducibility's vmap test for why)."""
    x, mask = data
    models, infos = ae.run_chains(jr.key(3), grid_models, x, mask, 2)
    assert infos.log_joint_x.shape == (C, 2) and infos.ok.dtype == bool
    for c, k in enumerate(jr.split(jr.key(3), C)):
        alone, alone_info = ae.run_chain(k, _index(grid_models, c), x, mask, 2, throw=False)
        _assert_close(_index(models, c), alone)
        _assert_close(_index(infos, c), alone_info)
    assert bool(infos.ok.all())


@pytest.mark.slow  # compiles a thinned run of 4 sweeps
def test_split_runs_and_thinning_equal_one_run(data, grid_models):
    """a + b sweeps in two calls (`start_iter=a`) equal a + b at once, and with `thin=a` the saved
    models are the models after sweeps a and a + b. Bit for bit: same program per chain."""
    x, mask = data
    key = jr.key(4)
    part, info_a = ae.run_chains(key, grid_models, x, mask, 2)
    both, info_b = ae.run_chains(key, part, x, mask, 2, start_iter=2)
    whole, info, saved = ae.run_chains(key, grid_models, x, mask, 4, thin=2)
    _assert_bitwise(both, whole)
    _assert_bitwise(jtu.tree_map(lambda u, v: jnp.concatenate([u, v], axis=1), info_a, info_b), info)
    assert saved.states.z.shape == (C, 2, N, T - L)
    _assert_bitwise(_index(jtu.tree_map(lambda v: jnp.swapaxes(v, 0, 1), saved), 0), part)
    _assert_bitwise(_index(jtu.tree_map(lambda v: jnp.swapaxes(v, 0, 1), saved), 1), whole)
    assert not np.array_equal(np.asarray(part.params.Ab), np.asarray(whole.params.Ab))  # the chains moved
    with pytest.raises(ValueError, match="thin"):
        ae.run_chains(key, grid_models, x, mask, 4, thin=3)


@pytest.mark.slow  # compiles single chains of 4 sweeps, thinned
def test_run_chain_thin(data, grid_models):
    x, mask = data
    model = _index(grid_models, 1)
    key = jr.key(5)
    first, _ = ae.run_chain(key, model, x, mask, 2)
    second, _ = ae.run_chain(key, first, x, mask, 2, start_iter=2)
    final, infos, saved = ae.run_chain(key, model, x, mask, 4, thin=2)
    assert infos.ok.shape == (4,) and saved.states.z.shape == (2, N, T - L)
    _assert_bitwise(final, second)
    _assert_bitwise(_index(saved, 0), first)
    _assert_bitwise(_index(saved, 1), second)


def test_bad_chain_does_not_stop_the_others(data, grid_models):
    """A chain whose prior scale is NaN goes bad; `run_chains` raises nothing, flags it in `ok`, and the
    other chains are the same as without it."""
    x, mask = data
    bad_S_0 = grid_models.hyperparams.S_0.at[1].set(jnp.nan)
    bad = eqx.tree_at(lambda m: m.hyperparams.S_0, grid_models, bad_S_0)
    models, infos = ae.run_chains(jr.key(3), bad, x, mask, 2)
    good, good_infos = ae.run_chains(jr.key(3), grid_models, x, mask, 2)
    assert not bool(infos.ok[1].any()) and bool(infos.ok[0].all()) and bool(infos.ok[2].all())
    for c in (0, 2):
        _assert_bitwise(_index(models, c), _index(good, c))


def test_run_chains_traces_once_across_kappa_grids(data, grid_models, monkeypatch):
    x, mask = data
    ae.run_chains(jr.key(6), grid_models, x, mask, 2)  # compiled here or before
    calls = []
    real = arhmm_eqx._model.gibbs_sweep
    monkeypatch.setattr(arhmm_eqx._model, "gibbs_sweep", lambda *a, **k: calls.append(1) or real(*a, **k))
    other = eqx.tree_at(lambda m: m.hyperparams.kappa, grid_models, jnp.array([3.0, 3e3, 3e7]))
    ae.run_chains(jr.key(6), other, x, mask, 2)
    assert calls == []


def test_run_chains_input_errors(data, grid_models, library_checks):
    x, mask = data
    with pytest.raises(ValueError, match="batched"):
        ae.run_chains(jr.key(0), _index(grid_models, 0), x, mask, 2)
    with pytest.raises(ValueError, match="mask"):
        ae.run_chains(jr.key(0), grid_models, x, mask[:, :-1], 2)
    with pytest.raises(ValueError, match="num_iters"):
        ae.run_chains(jr.key(0), grid_models, x, mask, 0)


def test_kappa_scan_reports_its_trace_and_picks_by_interpolation(data):
    x, mask = data
    hp = ae.Hyperparams.from_scales(K, D, L)
    scan = ae.kappa_scan(hp, KAPPAS, x, mask, key=jr.key(7), num_iters=2, chains_per_kappa=1, burn_in=0.5)
    np.testing.assert_array_equal(scan.kappas, KAPPAS)
    np.testing.assert_array_equal(np.asarray(scan.models.hyperparams.kappa), np.float32(KAPPAS))
    trace = np.asarray(scan.infos.median_duration, np.float64)
    np.testing.assert_allclose(scan.chain_durations[:, 0], trace[:, 1:].mean(axis=1))
    np.testing.assert_allclose(scan.durations, scan.chain_durations.mean(axis=1))
    # kappa_for: linear in log kappa between the bracketing grid points; clipped to the grid outside
    made = ae.KappaScan(
        np.array([1e3, 1e4, 1e5]), np.array([4.0, 8.0, 16.0]), np.zeros((3, 1)), scan.models, scan.infos
    )
    assert made.kappa_for(8.0) == pytest.approx(1e4)
    assert made.kappa_for(12.0) == pytest.approx(10**4.5)
    assert made.kappa_for(6.0) == pytest.approx(10**3.5)
    assert made.kappa_for(100.0) == pytest.approx(1e5) and made.kappa_for(1.0) == pytest.approx(1e3)
    with pytest.raises(ValueError, match="chains_per_kappa"):
        ae.kappa_scan(hp, KAPPAS, x, mask, key=jr.key(7), num_iters=2, chains_per_kappa=0)


def test_memory_check_refuses_what_cannot_fit(data, grid_models, monkeypatch):
    x, mask = data
    monkeypatch.setattr(arhmm_eqx._memory, "available_memory", lambda device=None: 1000)
    with pytest.raises(MemoryError, match=r"fewer chains.*sequence_chunk"):
        ae.run_chains(jr.key(0), grid_models, x, mask, 2)
    # the estimate scales with the chains, and the check passes when the memory is there
    one = ae.check_memory_fits(10, 10_000, 10, 3, 50, available=2**40)
    many = ae.check_memory_fits(10, 10_000, 10, 3, 50, num_chains=16, available=2**40)
    assert many.messages == 16 * one.messages and many.data > one.data
    with pytest.raises(MemoryError, match="about 1 fit"):
        ae.check_memory_fits(10, 10_000, 10, 3, 50, num_chains=16,
                             available=int(1.5 * (one.messages + one.working + 10 * 9_997 * 4)))
    assert ae.available_memory() is None or ae.available_memory() > 0


@pytest.mark.slow  # compiles the chains run two at a time
def test_chain_batch_size_gives_the_same_chains(data, grid_models):
    """`chain_batch_size=2` over 3 chains (a batch of 2, then the remainder) equals all at once."""
    x, mask = data
    together = ae.run_chains(jr.key(3), grid_models, x, mask, 2)
    batched = ae.run_chains(jr.key(3), grid_models, x, mask, 2, chain_batch_size=2)
    _assert_close(batched, together)
    with pytest.raises(ValueError, match="chain_batch_size"):
        ae.run_chains(jr.key(3), grid_models, x, mask, 2, chain_batch_size=0)
