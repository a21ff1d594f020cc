"""Drivers: a BlackJAX-shaped `gibbs_step` and `run_chain`, a `lax.scan` over sweeps."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jax import lax

from ._checks import check_data_at_entry, check_int, check_key, clean_data
from ._cores import on_cores
from ._custom_types import DataArray, MaskArray, PRNGKeyArray
from ._gibbs import GibbsInfo, SweepOptions
from ._model import ARHMM, check_states_fit_data, sweep, sweep_compiled


_NOT_FINITE_MSG = (
    "A Gibbs sweep produced non-finite values. Check the data scale (standardise `x`), "
    "or set EQX_ON_ERROR=nan to keep going and inspect `GibbsInfo.ok`."
)


def gibbs_step(
    key: PRNGKeyArray,
    model: ARHMM,
    x: DataArray,
    mask: MaskArray,
    *,
    states_only: bool = False,
    sequence_chunk: int | None = None,
    parallel: bool = False,
) -> tuple[ARHMM, GibbsInfo]:
    """One Gibbs sweep of `model` (BlackJAX-shaped: key first, returns `(model, info)`).

    Compiled once per shape: `kappa` and every other hyperparameter are array leaves, so
    it can be vmapped over models with different hyperparameters. The model and the data
    are checked first, on the host (`ARHMM.check`, `x`/`mask` values; under an outer `jit`
    the value checks go through `eqx.error_if`), then one compiled program runs.
    `sequence_chunk`: filter and sample the states this many sequences at a time, to bound
    memory (same samples). `parallel`: filter and sample the states with parallel-in-time
    scans (for GPUs; same samples, `K` times the memory of the sequential filter).
    """
    options = SweepOptions(states_only=states_only, sequence_chunk=sequence_chunk, parallel=parallel)
    check_key(key)
    model.check()
    hp = model.hyperparams
    x, mask = check_data_at_entry(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)  # on the host when concrete
    check_states_fit_data(model.states.z, x, hp.nlags)
    # large CPU data: the sequences split over one CPU device per core (`_cores`), same draws
    return on_cores(lambda m, x, mask, key: sweep_compiled(key, m, x, mask, options), model, x, mask, key)


def scan_sweeps(key, model: ARHMM, x, mask, start, num_iters: int, options: SweepOptions, thin: int | None = None):
    """The sweeps of one chain as a `lax.scan` (not jitted, so it can be vmapped over chains).

    Sweep `i` uses `fold_in(key, start + i)`. With `thin`, the scan is nested (outer steps of
    `thin` sweeps) and the model after every `thin`-th sweep is also returned, stacked.

    **Returns:** `(model, infos)`, or `(model, infos, samples)` when `thin` is given.
    """

    def body(m, i):
        return sweep(jr.fold_in(key, i), m, x, mask, options)

    iters = start + jnp.arange(num_iters, dtype=jnp.int32)
    if thin is None:
        return lax.scan(body, model, iters)

    def outer(m, its):
        m, infos = lax.scan(body, m, its)
        return m, (infos, m)

    model, (infos, samples) = lax.scan(outer, model, iters.reshape(num_iters // thin, thin))
    infos = jtu.tree_map(lambda a: a.reshape((num_iters,) + a.shape[2:]), infos)
    return model, infos, samples


@eqx.filter_jit
def scan_chain_compiled(key, model: ARHMM, x, mask, start, num_iters: int, options: SweepOptions,
                        thin: int | None = None):
    """`scan_sweeps` as one compiled program, on data whose host-side checks have run."""
    x, mask = clean_data(x, mask, nlags=model.hyperparams.nlags)  # no host callback here
    dtype = model.params.Ab.dtype
    return scan_sweeps(key, model, x.astype(dtype), mask.astype(dtype), start, num_iters, options, thin)


def check_thin(num_iters: int, thin: int | None) -> None:
    """`thin` must be None or a positive divisor of `num_iters`."""
    check_int("num_iters", num_iters)
    if thin is None:
        return
    if check_int("thin", thin) and num_iters % thin:
        raise ValueError(
            f"`thin` must be None or a positive int that divides `num_iters` = {num_iters}; got {thin!r}. "
            f"For example `thin={_divisor_near(num_iters, thin)}`."
        )


def _divisor_near(n: int, d) -> int:
    d = d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else 1
    return min((k for k in range(1, n + 1) if n % k == 0), key=lambda k: abs(k - d))


def run_chain(
    key: PRNGKeyArray,
    model: ARHMM,
    x: DataArray,
    mask: MaskArray,
    num_iters: int,
    *,
    start_iter: int = 0,
    states_only: bool = False,
    sequence_chunk: int | None = None,
    parallel: bool = False,
    throw: bool = True,
    thin: int | None = None,
) -> tuple[ARHMM, GibbsInfo] | tuple[ARHMM, GibbsInfo, ARHMM]:
    """Run `num_iters` sweeps as one compiled `lax.scan`.

    Sweep `i` uses the key `fold_in(key, start_iter + i)`, so running `a` sweeps and then
    `b` more with `start_iter=a` gives exactly the chain of `a + b` sweeps at once.

    **Arguments:**

    - `key`: a `jax.random.key`; `model`: the starting `ARHMM`; `x` `(N, T, D)`, `mask` `(N, T)`.
    - `num_iters`: number of sweeps (static: each new length compiles once).
    - `start_iter`: index of the first sweep (to resume a chain).
    - `states_only`, `sequence_chunk`, `parallel`: as in `gibbs_step`.
    - `throw`: raise `RuntimeError` (under a caller's `jit`, through `eqx.error_if`) when a
      sweep produced non-finite values;
      with `throw=False` look at `infos.ok` instead.
    - `thin`: also keep the model after every `thin`-th sweep (`thin` must divide `num_iters`).

    **Returns:** the final model and the stacked `GibbsInfo` of every sweep (leading axis
    `num_iters`); with `thin`, also the saved models stacked along a leading axis of
    length `num_iters // thin` (sample `j` is the model after sweep `(j + 1) * thin`).
    """
    options = SweepOptions(states_only=states_only, sequence_chunk=sequence_chunk, parallel=parallel)
    check_thin(num_iters, thin)
    check_key(key)
    model.check()
    hp = model.hyperparams
    x, mask = check_data_at_entry(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)  # on the host when concrete
    check_states_fit_data(model.states.z, x, hp.nlags)
    # an array, so chunks of a chain share one compilation (NumPy for an int: no JAX operation here)
    start = np.asarray(start_iter, np.int32) if isinstance(start_iter, (int, np.integer)) else jnp.asarray(
        start_iter, jnp.int32)
    out = on_cores(lambda m, x, mask, key, start: scan_chain_compiled(key, m, x, mask, start, num_iters, options, thin),
                   model, x, mask, key, start)
    model, infos, samples = out if thin is not None else (*out, None)
    if throw:
        if isinstance(infos.ok, jax.core.Tracer):  # under a caller's jit: in the caller's program
            model = eqx.error_if(model, ~infos.ok.all(), _NOT_FINITE_MSG)
        elif not np.all(np.asarray(infos.ok)):  # on the host: no program, no callback in the chain's
            raise RuntimeError(_NOT_FINITE_MSG)
    return (model, infos) if samples is None else (model, infos, samples)
