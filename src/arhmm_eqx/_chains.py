"""Many chains in one compiled program: restarts from one key, hyperparameter grids, `run_chains`.

A batch of `C` chains is one `ARHMM` whose every leaf has a leading chain axis (what
`eqx.filter_vmap` returns). The data `x`, `mask` are shared by all chains (closed over by
the `vmap`, never copied per chain).
"""


import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np

from . import _cores, _model
from ._checks import check_data, check_int, check_key, check_positive, validate_data, values_checked
from ._custom_types import DataArray, MaskArray, PRNGKeyArray
from ._gibbs import GibbsInfo, SweepOptions
from ._hyperparams import Hyperparams
from ._memory import check_memory_fits
from ._model import ARHMM
from ._run import check_thin, scan_sweeps
from ._sharding import check_mesh, constrain, gather, shard_chains


_CONTINUOUS = ("alpha", "gamma", "kappa", "nu_0", "S_0", "M_0", "K_0")


def chain_count(tree: ARHMM | Hyperparams) -> int | None:
    """Length of the leading chain axis of a batched model or hyperparameters; None if unbatched."""
    hp = tree.hyperparams if isinstance(tree, ARHMM) else tree
    return int(hp.kappa.shape[0]) if hp.kappa.ndim == 1 else None


def hyperparams_grid(hyperparams: Hyperparams, **values) -> Hyperparams:
    """Batched hyperparameters: one set per chain, for a grid of continuous values.

    **Arguments:**

    - `hyperparams`: the base `Hyperparams` (unbatched); fields not named are repeated.
    - `**values`: for any of `alpha, gamma, kappa, nu_0` a sequence of `C` values, and for
      `S_0, M_0, K_0` an array with a leading axis of length `C` (the same `C` for all).
      The values are zipped, not crossed: for a product grid, pass `jnp.meshgrid(...)`
      outputs raveled.

    **Returns:** a `Hyperparams` whose every leaf has a leading axis of length `C`, for
    `init_chains`. Example: `hyperparams_grid(hp, kappa=jnp.logspace(3, 8, 6))`.
    """
    if chain_count(hyperparams) is not None:
        raise ValueError("`hyperparams` is already batched; pass unbatched `Hyperparams` to `hyperparams_grid`.")
    unknown = sorted(set(values) - set(_CONTINUOUS))
    if unknown or not values:
        raise ValueError(f"`hyperparams_grid` takes grids for {list(_CONTINUOUS)}; got {sorted(values)}.")
    arrays = {}
    for name, v in values.items():
        base = getattr(hyperparams, name)
        arr = jnp.asarray(v, dtype=base.dtype)
        if arr.ndim != base.ndim + 1 or arr.shape[1:] != base.shape:
            raise ValueError(
                f"`{name}` must have shape (C,) + {base.shape} (one value per chain); got {arr.shape}."
            )
        if name in ("alpha", "gamma", "kappa"):
            check_positive(name, arr)
        if name == "nu_0" and not np.all(np.asarray(arr) > hyperparams.latent_dim - 1):
            raise ValueError(f"`nu_0` must be > latent_dim - 1 = {hyperparams.latent_dim - 1}; got {arr.tolist()}.")
        arrays[name] = arr
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"every grid must have the same, non-zero length C; got lengths {lengths}.")
    C = next(iter(lengths.values()))
    batched = jtu.tree_map(lambda a: jnp.broadcast_to(a, (C,) + a.shape), hyperparams)
    names = list(arrays)
    return eqx.tree_at(lambda h: [getattr(h, n) for n in names], batched, [arrays[n] for n in names])


@eqx.filter_jit
def _init_chains(hyperparams, x, mask, key, num_chains: int, batched: bool, checked: bool, groups=None):
    keys = jr.split(key, num_chains)
    init = lambda hp, k: _model.draw_from_prior(hp, x, mask, k, groups, checked=checked)
    return eqx.filter_vmap(init, in_axes=(0 if batched else None, 0))(hyperparams, keys)


def init_chains(
    hyperparams: Hyperparams,
    x: DataArray,
    mask: MaskArray,
    *,
    key: PRNGKeyArray,
    num_chains: int | None = None,
    groups=None,
) -> ARHMM:
    """Build `C` chains' starting models from the prior, in one vmapped call.

    Chain `c` is exactly `ARHMM.from_prior(hp_c, x, mask, key=jr.split(key, C)[c])`, with
    `hp_c` the `c`-th set of a batched `hyperparams` (from `hyperparams_grid`) or the one
    unbatched `hyperparams` (restarts).

    **Arguments:**

    - `hyperparams`: unbatched (restarts: then give `num_chains`) or batched.
    - `x` `(N, T, D)`, `mask` `(N, T)`: the data, shared by all chains.
    - `key`: a `jax.random.key`; `num_chains`: `C` (optional when `hyperparams` is batched).
    - `groups` `(N,)`: each sequence's group, with `hyperparams.num_groups` (as in `ARHMM.from_prior`).

    **Returns:** an `ARHMM` whose leaves have a leading chain axis of length `C`.
    """
    C = chain_count(hyperparams)
    if C is None and num_chains is None:
        raise ValueError("pass `num_chains` (the number of restarts), or batched hyperparameters (`hyperparams_grid`).")
    if C is not None and num_chains is not None and num_chains != C:
        raise ValueError(f"`num_chains` = {num_chains} but the batched `hyperparams` hold {C} chains.")
    C = num_chains if C is None else C
    C = check_int("num_chains", C)
    check_key(key)
    x, mask = validate_data(x, mask, nlags=hyperparams.nlags, latent_dim=hyperparams.latent_dim)  # on the host
    groups = _model.check_groups(groups, hyperparams.num_groups, x.shape[0])
    checked = values_checked(x, mask)
    return _init_chains(hyperparams, x, mask, key, C, chain_count(hyperparams) is not None, checked, groups)


@eqx.filter_jit
def _run_chains(key, models, x, mask, start, num_iters: int, options: SweepOptions, thin, mesh, chain_batch_size,
                checked: bool):
    C = chain_count(models)
    keys = jr.split(key, C)
    hp, dtype = models.hyperparams, models.params.Ab.dtype
    x, mask = check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim, values_checked=checked)
    x, mask = x.astype(dtype), mask.astype(dtype)
    models, keys, x, mask = constrain(models, keys, x, mask, mesh)
    run = lambda k, m: scan_sweeps(k, m, x, mask, start, num_iters, options, thin)
    if chain_batch_size is None or chain_batch_size >= C:
        return eqx.filter_vmap(run)(keys, models)
    # `chain_batch_size` chains at a time (vmapped), the batches one after another in the same program
    return jax.lax.map(lambda args: run(*args), (keys, models), batch_size=chain_batch_size)


def _check_memory(models, x, num_iters, thin, sequence_chunk, mesh, chain_batch_size):
    hp = models.hyperparams
    C = chain_count(models)
    N, T, _ = x.shape
    device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
    if mesh is not None and device.platform != "cpu":  # each accelerator holds its own shard
        C, N = C // mesh.shape["chains"], N // mesh.shape["sequences"]
    model_bytes = sum(a.size * a.dtype.itemsize for a in jtu.tree_leaves(models)) // chain_count(models)
    saved = C * (num_iters // thin) * model_bytes if thin else 0
    at_once = C if chain_batch_size is None else min(C, chain_batch_size)
    states = (C - at_once) * N * (T - hp.nlags) * 4  # states of the chains waiting for their turn
    check_memory_fits(N, T, hp.latent_dim, hp.nlags, hp.num_states, dtype=models.params.Ab.dtype,
                      sequence_chunk=sequence_chunk, num_chains=at_once, extra_bytes=saved + states, device=device)


def run_chains(
    key: PRNGKeyArray,
    models: ARHMM,
    x: DataArray,
    mask: MaskArray,
    num_iters: int,
    *,
    start_iter: int = 0,
    thin: int | None = None,
    states_only: bool = False,
    sequence_chunk: int | None = None,
    parallel: bool = False,
    mesh=None,
    chain_batch_size: int | None = None,
    check_memory: bool = True,
) -> tuple[ARHMM, GibbsInfo] | tuple[ARHMM, GibbsInfo, ARHMM]:
    """Run `C` chains together as one compiled program (a `vmap` of `run_chain`'s scan).

    Chain `c` uses the key `jr.split(key, C)[c]`: its result is that of
    `run_chain(jr.split(key, C)[c], model_c, x, mask, num_iters, start_iter=start_iter, throw=False)`
    (states exactly; floats to rounding, since XLA may order a batched sum differently).
    Splitting a run (`start_iter`) gives the same chains as one run.

    **Arguments:**

    - `key`: a `jax.random.key`; `models`: a batched `ARHMM` (`init_chains`).
    - `x` `(N, T, D)`, `mask` `(N, T)`: shared by all chains.
    - `num_iters`, `start_iter`, `thin`, `states_only`, `sequence_chunk`, `parallel`: as in `run_chain`.
    - `mesh`: a `jax.sharding.Mesh` from `chain_mesh()` to spread the chains (and, with
      `num_sequence_shards > 1`, the sequences) over devices; None runs on the default device.
    - `chain_batch_size`: run this many chains at a time (vmapped), the batches one after
      another inside the same compiled program (`lax.map`). Bounds memory to that many
      chains' temporaries (`1` runs about as fast as separate `run_chain` calls; vmapped
      chains are faster, see `benchmarks/bench_chains.py`).
      None (default) vmaps all chains at once. Not combined with `mesh` (each device
      already runs only its own chains).
    - `check_memory`: first compare the estimated working memory with the memory available
      and raise `MemoryError` with advice when it cannot fit.

    **Returns:** `(models, infos)` or, with `thin`, `(models, infos, samples)`: the final
    models `(C, ...)`, `GibbsInfo` traces of shape `(C, num_iters)` and saved models
    `(C, num_iters // thin, ...)`. Nothing raises for a chain that goes bad: read its
    `infos.ok` (one bad chain would otherwise stop all of them).
    """
    C = chain_count(models)
    if C is None:
        raise ValueError("`models` must be batched (a leading chain axis, from `init_chains`); "
                         "for a single model use `run_chain`.")
    options = SweepOptions(states_only=states_only, sequence_chunk=sequence_chunk, parallel=parallel)
    check_thin(num_iters, thin)
    check_key(key)
    models.check()
    hp = models.hyperparams
    x, mask = validate_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)  # on the host; no JAX operation
    _model.check_states_fit_data(models.states.z, x, hp.nlags)
    chain_batch_size = check_int("chain_batch_size", chain_batch_size, allow_none=True)
    if chain_batch_size is not None:
        if mesh is not None:
            raise ValueError("`chain_batch_size` and `mesh` cannot be combined: with a mesh each device runs "
                             "only its own chains; to use less memory per device, add devices or `sequence_chunk`.")
    if mesh is not None:
        check_mesh(mesh, C, x.shape[0])
    if check_memory:
        _check_memory(models, x, num_iters, thin, sequence_chunk, mesh, chain_batch_size)
    # large CPU data and no mesh given: chains (then sequences) split over one CPU device per core
    auto = (mesh is None and chain_batch_size is None and _cores.splits(models)
            and (mesh := _cores.sequence_mesh(x, num_chains=C)) is not None)
    checked = values_checked(x, mask)
    if mesh is not None:
        models, x, mask = shard_chains(models, x, mask, mesh)
    # an array, so chunks of a chain share one compilation (NumPy for an int: no JAX operation here)
    start = np.asarray(start_iter, np.int32) if isinstance(start_iter, (int, np.integer)) else jnp.asarray(
        start_iter, jnp.int32)
    if auto:
        key = _cores.replicated(key, mesh)
        out = _run_chains(key, models, x, mask, start, num_iters, options, thin, mesh, None, checked)
        return _cores.to_first_device(out, mesh)
    return _run_chains(key, models, x, mask, start, num_iters, options, thin, mesh, chain_batch_size, checked)


class KappaScan(eqx.Module):
    """The result of `kappa_scan`. `kappa_for(target)` picks the kappa for a target duration.

    - `kappas` `(G,)`: the grid; `durations` `(G,)`: median state duration reached at each
      kappa (frames; the mean over the kept part of the trace and over its chains).
    - `chain_durations` `(G, R)`: the same per chain; `models` and `infos`: the batched
      final models and `GibbsInfo` traces `(G * R, num_iters)`, chain `g * R + r` for kappa `g`.
    """

    kappas: np.ndarray
    durations: np.ndarray
    chain_durations: np.ndarray
    models: ARHMM
    infos: GibbsInfo

    def kappa_for(self, target_duration: float) -> float:
        """The kappa whose median duration is `target_duration` frames, interpolated linearly in
        `log kappa` between the first two grid points (in increasing kappa) that bracket the
        target; the nearest end of the grid when none does (widen the grid then)."""
        order = np.argsort(self.kappas)
        logk, d = np.log(self.kappas[order]), self.durations[order]
        for i in range(len(d) - 1):
            lo, hi = d[i], d[i + 1]
            if min(lo, hi) <= target_duration <= max(lo, hi):
                w = 0.0 if hi == lo else (target_duration - lo) / (hi - lo)
                return float(np.exp(logk[i] + w * (logk[i + 1] - logk[i])))
        return float(np.exp(logk[np.argmin(np.abs(d - target_duration))]))


def kappa_scan(
    hyperparams: Hyperparams,
    kappas,
    x: DataArray,
    mask: MaskArray,
    *,
    key: PRNGKeyArray,
    num_iters: int,
    chains_per_kappa: int = 1,
    burn_in: float = 0.5,
    sequence_chunk: int | None = None,
    mesh=None,
    chain_batch_size: int | None = None,
) -> KappaScan:
    """Run a grid of kappa values as vmapped chains and report the median state duration of each.

    MoSeq users pick the kappa whose median duration is near a target (about 12 frames at
    30 frames per second): `kappa_scan(...).kappa_for(12.0)`.

    **Arguments:**

    - `hyperparams`: unbatched; every field but `kappa` is kept.
    - `kappas`: the grid, e.g. `jnp.logspace(3, 8, 6)`.
    - `x`, `mask`: the data; `key`: a `jax.random.key` (split into init and run keys).
    - `num_iters`: sweeps per chain; `chains_per_kappa`: restarts per kappa (`R`).
    - `burn_in`: the fraction of the trace dropped before averaging the median duration.
    - `sequence_chunk`, `mesh`, `chain_batch_size`: as in `run_chains`. With several processes
      the grid runs as one program over all of them, and every process gets the whole result
      (its `models` and `infos` as NumPy arrays).

    **Returns:** a `KappaScan`.
    """
    kappas = np.asarray(kappas, dtype=np.float64).reshape(-1)
    R = chains_per_kappa
    R = check_int("chains_per_kappa", R)
    if not 0.0 <= burn_in < 1.0:
        raise ValueError(f"`burn_in` must be a fraction in [0, 1); got {burn_in!r}.")
    grid = hyperparams_grid(hyperparams, kappa=np.repeat(kappas, R))
    key_init, key_run = jr.split(key)
    models = init_chains(grid, x, mask, key=key_init)
    models, infos = run_chains(key_run, models, x, mask, num_iters, sequence_chunk=sequence_chunk, mesh=mesh,
                               chain_batch_size=chain_batch_size)
    if jax.process_count() > 1:  # chains on other processes' devices: every process gets them all
        models, infos = gather((models, infos))
    trace = np.asarray(infos.median_duration, dtype=np.float64)
    kept = trace[:, int(burn_in * num_iters):]
    chain_durations = kept.mean(axis=1).reshape(len(kappas), R)
    return KappaScan(kappas, chain_durations.mean(axis=1), chain_durations, models, infos)
