"""The fit loop for long runs: `run_chain` in chunks, with a progress bar, checkpoints, Ctrl-C and `resume`."""

import contextlib
import os
import signal
import threading
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .. import _cores
from .._checks import check_data, check_int, check_key
from .._custom_types import DataArray, MaskArray, PRNGKeyArray
from .._gibbs import GibbsInfo, SweepOptions
from .._model import ARHMM, check_states_fit_data
from .._run import scan_chain_compiled
from .._sharding import check_mesh, gather, shard_one_chain
from . import _compiler_memory  # noqa: F401  (the fit loop installs the compile listener)
from ._checkpoint import (
    CheckpointError,
    checkpoint_name,
    empty_trace,
    key_meta as key_meta,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from ._compile_cache import use_compilation_cache


class FitResult(eqx.Module):
    """What `fit` and `resume` return.

    - `model`: the model after `iteration` sweeps (the last good one if the run stopped early).
    - `infos`: the stacked `GibbsInfo` of sweeps `first_iter .. iteration - 1`.
    - `iteration`: the number of sweeps the chain has done; resume from here.
    - `stopped_reason`: `"completed"`, `"interrupted"` (Ctrl-C) or `"nonfinite"` (a sweep
      produced non-finite values; `model` is the one before it).
    - `first_iter`: index of the first sweep in `infos`.
    - `checkpoint`: the `.json` of the last checkpoint written, or `None`.
    """

    model: ARHMM
    infos: GibbsInfo
    iteration: int
    stopped_reason: str
    first_iter: int = 0
    checkpoint: Path | None = None


_NONFINITE_MSG = (
    "Gibbs sweep {sweep} produced non-finite values; stopped and kept the model after sweep {good}. "
    "Standardise the data (e.g. `standardize`), check it for extreme values, or use float64."
)


# The trace is kept in NumPy: concatenating JAX arrays of a new length each chunk would compile each time.
def _concat(a: GibbsInfo, b: GibbsInfo) -> GibbsInfo:
    return jtu.tree_map(lambda u, v: np.concatenate([np.asarray(u), np.asarray(v)]), a, b)


def _take(infos: GibbsInfo, n: int) -> GibbsInfo:
    return jtu.tree_map(lambda u: np.asarray(u)[:n], infos)




@contextlib.contextmanager
def _interrupt_flag(defer: bool = False):
    """Record Ctrl-C as well as raising `KeyboardInterrupt`: JAX runs callbacks (its garbage
    collection hook) in which a `KeyboardInterrupt` is printed and ignored, and the loop then
    still stops at the end of the chunk. Only in the main thread, and only when SIGINT has
    Python's default handler.

    With `defer` (several processes) the first Ctrl-C only sets the flag: the processes agree
    after each chunk whether any of them was interrupted and then stop together, at the same
    sweep, so that their checkpoint is one state of the chain. A second Ctrl-C raises at once."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield flag
        return

    def handler(signum, frame):
        again = flag["set"]
        flag["set"] = True
        if not defer or again:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _check_count(name: str, value, minimum: int, allow_none: bool = True) -> None:
    check_int(name, value, minimum=minimum, allow_none=allow_none)


def _chunk_length(chunk_size: int | None, save_every: int | None, num_iters: int) -> int:
    """Sweeps per compiled call: `chunk_size` (default 10), lowered to a divisor of `save_every`
    so that chunks end on every checkpoint iteration without a third compiled length."""
    chunk = min(chunk_size or 10, num_iters)
    if save_every is not None:
        chunk = max(d for d in range(1, min(chunk, save_every) + 1) if save_every % d == 0)
    return chunk


def _check_checkpoint_dir(directory: Path, key, start_iter: int) -> None:
    """Refuse a folder that holds another chain's checkpoints, or this chain's past `start_iter`:
    writing there would mix two chains or overwrite snapshots."""
    if not directory.is_dir():
        return
    found = {}
    for meta_path in directory.glob("ckpt_*.json"):
        try:
            meta = read_checkpoint_metadata(meta_path)
            found[int(meta["iteration"])] = meta["key"]["data"]
        except (CheckpointError, OSError, ValueError, KeyError, TypeError):
            continue  # a damaged snapshot may be rewritten; `latest_checkpoint` reports those
    if not found:
        return
    later = sorted(i for i in found if i > start_iter)
    own = start_iter in found and found[start_iter] == key_meta(key)["data"]
    if later or not own:
        raise ValueError(
            f"`checkpoint_dir` {str(directory)!r} already holds checkpoints of "
            + (f"this chain past iteration {start_iter} (up to {later[-1]})" if own else "another chain")
            + "; continue that chain with `resume`, or give a new folder."
        )


def fit(
    model: ARHMM,
    x: DataArray,
    mask: MaskArray,
    *,
    key: PRNGKeyArray,
    num_iters: int,
    start_iter: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    save_every: int | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
    states_only: bool = False,
    sequence_chunk: int | None = None,
    parallel: bool = False,
    metadata: dict | None = None,
    compile_cache: bool | str | os.PathLike = True,
    mesh=None,
) -> FitResult:
    """Run `num_iters` Gibbs sweeps for long fits: the same chain as `run_chain(key, model, x,
    mask, num_iters, start_iter=start_iter)`, bit for bit, run in chunks of compiled sweeps.

    Between chunks it updates a progress bar (live `log_joint_x` and states used), saves
    checkpoints, and checks `GibbsInfo.ok`: after a sweep with non-finite values it stops with
    a `RuntimeWarning` and returns (and checkpoints) the model of the last good sweep. Ctrl-C
    (`KeyboardInterrupt`) stops it cleanly: the last completed chunk is returned and checkpointed.
    With several processes, Ctrl-C on any of them stops all of them after the same chunk.

    **Arguments:**

    - `model`, `x` `(N, T, D)`, `mask` `(N, T)`, `key`: as in `run_chain`.
    - `num_iters`: sweeps to run in this call; `start_iter`: index of the first one.
    - `checkpoint_dir`: where to write checkpoints (`save_checkpoint`): at the start (unless
      one exists), after every sweep whose count is a multiple of `save_every`, and at the end
      (also after Ctrl-C or a non-finite sweep). `None`: no checkpoints.
    - `progress`: show a `tqdm` progress bar on stderr.
    - `chunk_size`: sweeps per compiled call (default 10; lowered to a divisor of `save_every`).
    - `states_only`, `sequence_chunk`, `parallel`: as in `gibbs_step`.
    - `metadata`: JSON-serialisable dict stored in every checkpoint.
    - `compile_cache`: keep compiled programs on disk, so that a second fit (or resume, or
      command-line call) with the same shapes compiles nothing: True uses the folder of
      `ARHMM_EQX_COMPILE_CACHE` or `~/.cache/arhmm_eqx/jax` (see `use_compilation_cache`), a
      path uses that folder, False leaves JAX's configuration alone. Process-wide.
    - `mesh`: a mesh from `chain_mesh(num_sequence_shards=...)` to split the sequences of the
      chain over its devices (`x`, `mask` may then be global arrays from `shard_sequences`);
      None runs on the default device.

    With several processes (`jax.distributed.initialize`, `init_distributed`), every process
    calls `fit` with the same arguments; only process 0 writes checkpoints, and every process
    returns the same `FitResult` (its model on the process's own default device).

    **Returns:** a `FitResult`.
    """
    return _fit(model, x, mask, key=key, num_iters=num_iters, start_iter=start_iter, checkpoint_dir=checkpoint_dir,
                save_every=save_every, progress=progress, chunk_size=chunk_size, states_only=states_only,
                sequence_chunk=sequence_chunk, parallel=parallel, metadata=metadata, history=None,
                compile_cache=compile_cache, mesh=mesh)


def _fit(model, x, mask, *, key, num_iters, start_iter, checkpoint_dir, save_every, progress, chunk_size,
         states_only, sequence_chunk, parallel, metadata, history, compile_cache=True, mesh=None) -> FitResult:
    from tqdm import tqdm

    _check_count("num_iters", num_iters, 1, allow_none=False)
    _check_count("start_iter", start_iter, 0, allow_none=False)
    _check_count("save_every", save_every, 1)
    _check_count("chunk_size", chunk_size, 1)
    if save_every is not None and checkpoint_dir is None:
        raise ValueError("`save_every` needs `checkpoint_dir`: pass the directory to write checkpoints into.")
    if not isinstance(model, ARHMM):
        raise TypeError(f"`model` must be an `ARHMM` (e.g. from `ARHMM.from_prior`); got {type(model).__name__}.")
    if model.params.Ab.ndim != 3:
        raise ValueError("`fit` runs one chain; for a batch of models use `run_chains`.")
    check_key(key)
    model.check()
    hp = model.hyperparams
    x, mask = check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)  # once, not per chunk
    check_states_fit_data(model.states.z, x, hp.nlags)
    if compile_cache is not False:
        use_compilation_cache(None if compile_cache is True else compile_cache)
    dtype = model.params.Ab.dtype
    x, mask = x.astype(dtype), mask.astype(dtype)
    if mesh is not None:
        check_mesh(mesh, mesh.shape["chains"], x.shape[0])
    # large CPU data and no mesh given: the sequences split over one CPU device per core
    auto = mesh is None and _cores.splits(model) and (mesh := _cores.sequence_mesh(x)) is not None
    if mesh is not None:
        model, x, mask = shard_one_chain(model, x, mask, mesh)
    run_key = _cores.replicated(key, mesh) if auto else key
    many = jax.process_count() > 1  # every process runs this loop; process 0 writes
    fetch = gather if many else (lambda tree: tree)
    chunk = _chunk_length(chunk_size, save_every, num_iters)
    first = start_iter - (0 if history is None else int(history.ok.shape[0]))
    learned = hp.concentrations is not None  # the trace then holds the learned concentrations too
    trace = empty_trace(dtype, learned) if history is None else _take(history, int(history.ok.shape[0]))
    iteration, stop, reason, last_ckpt = start_iter, start_iter + num_iters, "completed", None

    sweep_options = SweepOptions(states_only=bool(states_only), sequence_chunk=sequence_chunk, parallel=bool(parallel))
    options = {"states_only": bool(states_only), "sequence_chunk": sequence_chunk, "parallel": bool(parallel)}

    def save(m, it, tr):
        nonlocal last_ckpt
        if checkpoint_dir is None:
            return
        m = _on_host(m) if many else m  # a collective: every process takes part
        if jax.process_index() == 0:
            last_ckpt = save_checkpoint(checkpoint_dir, m, iteration=it, key=key, infos=tr, metadata=metadata,
                                        sweep_options=options)
        else:
            last_ckpt = Path(checkpoint_dir) / f"{checkpoint_name(it)}.json"
        _barrier(many, f"checkpoint {it}")  # written before any process goes on

    first_saved = False
    if checkpoint_dir is not None:
        _check_checkpoint_dir(Path(checkpoint_dir), key, start_iter)
        first_saved = (Path(checkpoint_dir) / f"{checkpoint_name(start_iter)}.json").exists()
    _barrier(many, "checked")  # every process has looked at the folder before process 0 writes to it
    bar = tqdm(total=stop, initial=start_iter, disable=not progress or jax.process_index() != 0, unit="sweep",
               dynamic_ncols=True)
    stack = contextlib.ExitStack()
    try:
        interrupted = stack.enter_context(_interrupt_flag(defer=many))
        if checkpoint_dir is not None and not first_saved:
            save(model, start_iter, trace)
        while iteration < stop:
            n = min(chunk, stop - iteration)
            if save_every is not None:
                n = min(n, save_every - iteration % save_every)
            start = jnp.asarray(iteration, jnp.int32)
            new, infos = scan_chain_compiled(run_key, model, x, mask, start, n, sweep_options)
            infos = fetch(infos)
            ok = np.asarray(infos.ok)  # waits for the chunk: Ctrl-C lands here or in the call above
            if interrupted["set"] and not many:  # the KeyboardInterrupt was swallowed by a callback
                raise KeyboardInterrupt
            if not ok.all():
                bad = int(np.argmin(ok))
                if bad == 0:
                    new = model
                else:  # rerun the good sweeps of the chunk: the chain is deterministic given the key
                    new, _ = scan_chain_compiled(run_key, model, x, mask, start, bad, sweep_options)
                model, trace, iteration = new, _concat(trace, _take(infos, bad)), iteration + bad
                reason = "nonfinite"
                warnings.warn(_NONFINITE_MSG.format(sweep=iteration + 1, good=iteration), RuntimeWarning,
                              stacklevel=3)  # the caller of `fit` / `resume`
                break
            model, trace, iteration = new, _concat(trace, infos), iteration + n
            bar.set_postfix(log_joint_x=f"{float(infos.log_joint_x[-1]):.6g}",
                            states=int(infos.num_states_used[-1]), refresh=False)
            bar.update(n)
            if many and _any_process(interrupted["set"]):  # every process stops after this same chunk
                raise KeyboardInterrupt
            if save_every is not None and iteration % save_every == 0 and iteration < stop:
                save(model, iteration, trace)
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        stack.close()
        bar.close()
    save(model, iteration, trace)
    if many:
        model = _on_host(model)
    elif auto:  # where a fit without the split would have left it
        model = _cores.to_first_device(model, mesh)
    return FitResult(model, jtu.tree_map(jnp.asarray, trace), iteration, reason, first, last_ckpt)


def _on_host(model: ARHMM) -> ARHMM:
    """The whole model on this process's default device (a collective over processes)."""
    return jtu.tree_map(jnp.asarray, gather(model))


def _any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process (a collective: every process takes part)."""
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def _barrier(many: bool, name: str) -> None:
    if many:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"arhmm_eqx fit: {name}")


def resume(
    path: str | os.PathLike,
    x: DataArray,
    mask: MaskArray,
    *,
    num_iters: int,
    checkpoint_dir: str | os.PathLike | None = None,
    save_every: int | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
    states_only: bool | None = None,
    sequence_chunk: int | None | str = "saved",
    parallel: bool | None = None,
    metadata: dict | None = None,
    compile_cache: bool | str | os.PathLike = True,
    mesh=None,
) -> FitResult:
    """Continue a chain from a checkpoint: `num_iters` more sweeps with the saved key, from the
    saved iteration, so that fit-then-resume is the uninterrupted chain bit for bit.

    **Arguments:**

    - `path`: a checkpoint directory (its newest valid checkpoint is used) or a checkpoint file.
    - `x`, `mask`: the data the chain was fitted on.
    - `num_iters`: sweeps to run now.
    - `checkpoint_dir`: where to write new checkpoints; default the checkpoint's own directory.
    - The other arguments as in `fit`. `metadata`, `states_only`, `sequence_chunk` and
      `parallel` default to the checkpoint's (what `fit` ran with; `sequence_chunk="saved"`,
      since `None` means no chunks), which continues the chain exactly; pass them to change
      them (the last two change floats only by rounding). `mesh` as in `fit`: with several
      processes, every process resumes from the same checkpoint file.

    **Returns:** a `FitResult` whose `infos` start with the trace saved in the checkpoint.
    """
    model, meta = load_checkpoint(path)
    x_shape = tuple(np.shape(x))
    want = (meta["num_sequences"], meta["num_frames_z"] + meta["nlags"], meta["latent_dim"])
    if x_shape != want:
        raise ValueError(
            f"the checkpoint {meta['path']!r} was fitted on `x` of shape (N, T, D) = {want}; got {x_shape}. "
            "Resume with the same data, prepared the same way."
        )
    if checkpoint_dir is None:
        checkpoint_dir = Path(meta["path"]).parent
    saved = {"states_only": False, "sequence_chunk": None, "parallel": False} | meta.get("sweep_options", {})
    states_only = saved["states_only"] if states_only is None else states_only
    sequence_chunk = saved["sequence_chunk"] if sequence_chunk == "saved" else sequence_chunk
    parallel = saved["parallel"] if parallel is None else parallel
    return _fit(model, x, mask, key=meta["key"], num_iters=num_iters, start_iter=meta["iteration"],
                checkpoint_dir=checkpoint_dir, save_every=save_every, progress=progress, chunk_size=chunk_size,
                states_only=states_only, sequence_chunk=sequence_chunk, parallel=parallel, compile_cache=compile_cache,
                metadata=meta["user"] if metadata is None else metadata, history=meta["infos"], mesh=mesh)
