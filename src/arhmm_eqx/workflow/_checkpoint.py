"""Checkpoints of a chain (atomic, checksummed snapshots) and the reference dict model as `.npz`/`.h5` files.

A checkpoint is two files in one directory, `ckpt_<iteration>.eqx` (the leaves of the model
and of the trace of earlier sweeps, written by `eqx.tree_serialise_leaves`) and
`ckpt_<iteration>.json` (sizes, dtypes, iteration, key, sweep options, hyperparameters, and one
SHA-256 over the `.eqx` bytes and all other metadata, so that neither file can change, be
swapped for another checkpoint's or be renamed without the pair reading as damaged). The
checksum detects damage and mix-ups; it does not authenticate (anyone can write a valid
pair). Each file is written to a temporary file in the same directory, flushed, fsynced and
renamed over its final name, the `.json` last: a checkpoint exists once its
`.json` does, and a crash while writing leaves every earlier checkpoint untouched. Snapshots
are never deleted.
"""

import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np

from .._checks import check_int, check_key
from .._concentrations import ConcentrationPrior
from .._custom_types import PRNGKeyArray
from .._gibbs import GibbsInfo
from .._hyperparams import Hyperparams
from .._model import ARHMM
from .._params import Params
from .._robust import RobustPrior
from .._states import States
from ._files import atomic_write, read_arrays


FORMAT_VERSION = 2  # 2: the checksum covers the metadata too
_NAME = re.compile(r"^ckpt_(\d+)\.json$")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, truncated or of another format."""


def checkpoint_name(iteration: int) -> str:
    """`ckpt_<iteration>` with at least six digits (the stem of both files)."""
    return f"ckpt_{iteration:06d}"


def _scalar_info(dtype, learned: bool = False) -> GibbsInfo:
    f = jnp.zeros((), dtype)
    conc = {"alpha": f, "gamma": f, "kappa": f} if learned else {}  # learned concentrations in the trace
    return GibbsInfo(log_joint_x=f, log_joint_z=f, num_states_used=jnp.zeros((), jnp.int32), median_duration=f,
                     ok=jnp.zeros((), bool), **conc)


def empty_trace(dtype, learned: bool = False) -> GibbsInfo:
    """A stacked `GibbsInfo` of zero sweeps (NumPy leaves); `learned`: with the concentrations' traces."""
    return jtu.tree_map(lambda a: np.zeros((0,), a.dtype), _scalar_info(dtype, learned))


def _concentrations_meta(hp: Hyperparams) -> dict | None:
    """The static flags of `hp.concentrations` (None without): they fix the checkpoint's tree."""
    c = hp.concentrations
    return None if c is None else {"learn_alpha": c.learn_alpha, "learn_gamma": c.learn_gamma,
                                   "learn_kappa": c.learn_kappa}


def _leaf_specs(tree) -> list[dict]:
    return [{"shape": list(np.shape(leaf)), "dtype": str(np.asarray(leaf).dtype)} for leaf in jtu.tree_leaves(tree)]


def key_meta(key) -> dict:
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    impl = str(jr.key_impl(key)) if typed else str(jr.key_impl(jr.wrap_key_data(key)))
    return {"data": np.asarray(jr.key_data(key)).tolist(), "impl": impl, "typed": bool(typed)}


def _key_from_meta(meta: dict):
    key = jr.wrap_key_data(jnp.asarray(meta["data"], jnp.uint32), impl=meta["impl"])
    return key if meta["typed"] else jr.key_data(key)


def save_checkpoint(
    path: str | os.PathLike, model: ARHMM, *, iteration: int, key, infos: GibbsInfo | None = None,
    metadata: dict | None = None, sweep_options: dict | None = None,
) -> Path:
    """Save `model` after `iteration` sweeps of the chain driven by `key` (atomic; see the module docstring).

    **Arguments:**

    - `path`: a directory (the files are then `checkpoint_name(iteration)` + `.eqx`/`.json`
      in it, created if needed; a path without a suffix is taken as a directory) or an `.eqx`
      or `.json` path (both files are written, with its stem).
    - `model`: one `ARHMM` (not a batch).
    - `iteration`: number of sweeps done; `resume` runs sweep `iteration` next.
    - `key`: the chain's key (as passed to `run_chain`).
    - `infos`: optional stacked `GibbsInfo` of earlier sweeps, kept as the chain's trace.
    - `metadata`: optional JSON-serialisable dict, stored under `"user"`.
    - `sweep_options`: the sweep's `states_only`, `sequence_chunk` and `parallel`, stored
      under `"sweep_options"` for `resume` (`fit` passes them).

    **Returns:** the path of the `.json` file.
    """
    if model.params.Ab.ndim != 3:
        raise ValueError("`save_checkpoint` takes one model; index a batch of models first.")
    iteration = check_int("iteration", iteration, minimum=0)
    path = Path(path)
    if path.suffix in (".eqx", ".json"):
        stem = path.with_suffix("")
    elif path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        stem = path / checkpoint_name(int(iteration))
    else:
        raise ValueError(f"`path` must be a directory or end in .eqx or .json; got {str(path)!r}.")
    if infos is None:
        infos = empty_trace(model.params.Ab.dtype, model.hyperparams.concentrations is not None)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, (model, infos))
    data = buffer.getvalue()
    hp = model.hyperparams
    meta = {
        "format": "arhmm_eqx checkpoint",
        "format_version": FORMAT_VERSION,
        "library_version": _library_version(),
        "iteration": int(iteration),
        "num_states": hp.num_states, "latent_dim": hp.latent_dim, "nlags": hp.nlags,
        "num_sequences": int(model.states.z.shape[0]), "num_frames_z": int(model.states.z.shape[1]),
        "dtype": str(model.params.Ab.dtype),
        "trace_length": int(infos.ok.shape[0]),
        "key": key_meta(key),
        "hyperparams": {k: float(getattr(hp, k)) for k in ("alpha", "gamma", "kappa", "nu_0")}
        | {"S_0_scale": float(hp.S_0[0, 0]), "K_0_scale": float(hp.K_0[0, 0])},
        "leaves": _leaf_specs((model, infos)),
        "user": metadata or {},
        "sweep_options": sweep_options or {},
    }
    if hp.num_groups is not None:  # per-group transition matrices: the skeleton needs G
        meta["num_groups"] = hp.num_groups
    if hp.concentrations is not None:  # absent (as in older checkpoints) when nothing is learned
        meta["concentrations"] = _concentrations_meta(hp)
    if hp.robust is not None:  # the static fields of the robust prior, for `_skeleton`
        meta["robust"] = {"resample_nu": hp.robust.resample_nu, "nu_mh_steps": hp.robust.nu_mh_steps,
                          "nu_step_size": hp.robust.nu_step_size}
    meta["sha256"] = _digest(data, meta)  # fails before anything is written if `metadata` is not JSON
    text = json.dumps(meta, indent=1)
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(stem.with_suffix(".eqx"), data)
    atomic_write(stem.with_suffix(".json"), text.encode())
    return stem.with_suffix(".json")


def _digest(data: bytes, meta: dict) -> str:
    """SHA-256 of the `.eqx` bytes and of the metadata (all but `sha256`), in canonical JSON."""
    h = hashlib.sha256(data)
    h.update(b"\0")
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True,
                        separators=(",", ":")).encode())
    return h.hexdigest()


def _library_version() -> str:
    from .. import __version__

    return __version__


def _corrupt(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(path)!r} is corrupt or truncated ({what}). Earlier snapshots in the same directory "
        "are untouched: load the previous one (`latest_checkpoint` skips damaged files)."
    )


def read_checkpoint_metadata(path: str | os.PathLike) -> dict:
    """The `.json` metadata of a checkpoint, after checking the `.eqx` file against its checksum."""
    stem = Path(path).with_suffix("") if Path(path).suffix in (".eqx", ".json") else Path(path)
    meta_path, leaves_path = stem.with_suffix(".json"), stem.with_suffix(".eqx")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {str(meta_path)!r} does not exist; pass a checkpoint directory or the "
                              ".json (or .eqx) file of a checkpoint written by `save_checkpoint`.")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise _corrupt(meta_path, f"unreadable JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != "arhmm_eqx checkpoint":
        raise _corrupt(meta_path, "not an arhmm_eqx checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(meta_path)!r} has format version {meta.get('format_version')}; "
                              f"this version of arhmm_eqx reads version {FORMAT_VERSION}.")
    if not leaves_path.is_file():
        raise _corrupt(leaves_path, "the .eqx file is missing")
    if _digest(leaves_path.read_bytes(), meta) != meta.get("sha256"):
        raise _corrupt(leaves_path, f"the SHA-256 of it and of {meta_path.name} does not match the one recorded")
    try:
        iteration, trace_length = meta["iteration"], meta["trace_length"]
        ok = (isinstance(iteration, int) and isinstance(trace_length, int) and 0 <= trace_length <= iteration
              and meta["leaves"][-1]["shape"] == [trace_length] and isinstance(meta["key"]["data"], list)
              and isinstance(meta["sweep_options"], dict) and isinstance(meta["user"], dict))
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise _corrupt(meta_path, "its iteration, trace, key or options are missing or inconsistent")
    if (m := _NAME.match(meta_path.name)) and int(m.group(1)) != iteration:
        raise _corrupt(meta_path, f"it holds iteration {iteration}, not the {int(m.group(1))} of its name")
    return meta


def load_checkpoint(path: str | os.PathLike) -> tuple[ARHMM, dict]:
    """Load a checkpoint written by `save_checkpoint`.

    **Arguments:** `path`: the `.json` or `.eqx` file, their common stem, or a directory (then
    its newest valid checkpoint, see `latest_checkpoint`).

    **Returns:** `(model, meta)`: `meta` is the `.json` metadata plus `"key"` (the chain's key,
    rebuilt), `"infos"` (the stacked `GibbsInfo` saved with it) and `"path"`.
    Raises `CheckpointError` naming the file when it is missing, corrupt or truncated.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no valid checkpoint in {str(path)!r}.")
        path = found
    meta = read_checkpoint_metadata(path)
    like = _skeleton(meta, path)
    leaves_path = path.with_suffix(".eqx") if path.suffix in (".eqx", ".json") else path.with_suffix(".eqx")
    try:
        model, infos = eqx.tree_deserialise_leaves(leaves_path, like)
    except Exception as e:  # the checksum matched, so this is a file written by something else
        raise _corrupt(leaves_path, f"{type(e).__name__}: {e}") from None
    out = dict(meta)
    out.update(key=_key_from_meta(meta["key"]), infos=infos, path=str(leaves_path.with_suffix(".json")))
    return model, out


def _skeleton(meta: dict, path: Path):
    """`(ARHMM, GibbsInfo)` of ShapeDtypeStructs with the sizes, shapes and dtypes of the metadata."""
    try:
        K, D, L = meta["num_states"], meta["latent_dim"], meta["nlags"]
        specs = [(tuple(s["shape"]), np.dtype(s["dtype"])) for s in meta["leaves"]]
    except (KeyError, TypeError) as e:
        raise _corrupt(path, f"metadata field missing: {e}") from None
    if any(dt.itemsize == 8 and dt.kind in "fiu" for _, dt in specs) and not jax.config.read("jax_enable_x64"):
        raise CheckpointError(f"checkpoint {str(path)!r} holds 64-bit arrays; enable them before loading with "
                              "`jax.config.update('jax_enable_x64', True)`.")

    G = meta.get("num_groups")
    if G is not None and not (isinstance(G, int) and G >= 1):
        raise _corrupt(path, f"`num_groups` is {G!r}")
    flags = meta.get("concentrations")
    if flags is not None and (not isinstance(flags, dict) or set(flags) != {"learn_alpha", "learn_gamma", "learn_kappa"}
                              or not all(isinstance(v, bool) for v in flags.values())):
        raise _corrupt(path, "its `concentrations` entry is not the three learn_* flags")
    robust = meta.get("robust")
    if robust is not None:  # a robust model: its prior's static fields, and the leaves nu and tau
        try:
            robust = RobustPrior(**robust)
        except (TypeError, ValueError) as e:
            raise _corrupt(path, f"robust prior unreadable: {e}") from None

    def build():
        A = D * L + 1
        pi_shape = (K, K) if G is None else (G, K, K)
        groups = None if G is None else jnp.zeros((1,), jnp.int32)
        conc = None if flags is None else ConcentrationPrior(**flags)
        nu, tau = (None, None) if robust is None else (jnp.ones(K), jnp.ones((1, 1)))
        model = ARHMM(Hyperparams.from_scales(K, D, L, num_groups=G, concentrations=conc, robust=robust),
                      Params(Ab=jnp.zeros((K, D, A)), Q=jnp.zeros((K, D, D)), pi=jnp.zeros(pi_shape),
                             betas=jnp.zeros(K), nu=nu),
                      States(z=jnp.zeros((1, 1), jnp.int32), groups=groups, tau=tau))
        return model, _scalar_info(jnp.zeros(()).dtype, flags is not None)

    treedef = jtu.tree_structure(eqx.filter_eval_shape(build))
    if treedef.num_leaves != len(specs):
        raise _corrupt(path, f"{len(specs)} leaves listed, {treedef.num_leaves} expected")
    return jtu.tree_unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in specs])


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The `.json` files of the checkpoints in `directory`, oldest iteration first (unchecked)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint in `directory` whose files are intact, or `None` if there is none.

    Damaged checkpoints (corrupt or truncated, e.g. from a disk that filled up) are skipped
    with a `RuntimeWarning` that names them; temporary files of an interrupted write are ignored.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            read_checkpoint_metadata(path)
        except CheckpointError as e:
            warnings.warn(f"skipping {path.name}: {e}", RuntimeWarning, stacklevel=2)
            continue
        return path
    return None


def _flatten(d: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for name, value in flat.items():
        *groups, leaf = name.split("/")
        node = out
        for g in groups:
            node = node.setdefault(g, {})
        node[leaf] = value
    return out


def save_moseq_model(path: str | os.PathLike, model: ARHMM, *, key: PRNGKeyArray) -> Path:
    """Write `model` as the reference dict model (`compat.model_to_dict`: `seed`, `states`,
    `params`, `hypparams`) to `.npz` (keys such as `params/Ab`) or `.h5`/`.hdf5` (one group per
    dict). Written atomically. `key`: the key a client continuing the chain would use next (for
    example `fold_in(key, iteration)` of the fit's key), stored as `seed` (its raw `uint32` data).
    """
    from ..compat import model_to_dict

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".npz", ".h5", ".hdf5"):
        raise ValueError(f"`path` must end in .npz, .h5 or .hdf5; got {str(path)!r}.")
    check_key(key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.key_data(key)
    flat = _flatten(model_to_dict(model, seed=key))
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    if ext == ".npz":
        np.savez(buffer, **flat)
    else:
        h5py = _import_h5py()
        with h5py.File(buffer, "w") as f:
            for name, value in flat.items():
                f.create_dataset(name, data=value)
    atomic_write(path, buffer.getvalue())  # fsynced and renamed, as the checkpoints
    return path


def load_moseq_model(path: str | os.PathLike) -> ARHMM:
    """Read a reference dict model written by `save_moseq_model` (or laid out the same way) as an `ARHMM`."""
    from ..compat import model_from_dict

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".npz", ".h5", ".hdf5"):
        raise ValueError(f"`path` must end in .npz, .h5 or .hdf5; got {str(path)!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist.")
    flat = read_arrays(path)
    _check_model_arrays(flat, str(path))
    try:
        return model_from_dict(_unflatten(flat))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read a model from {str(path)!r}: {type(e).__name__}: {e}") from None


def _check_model_arrays(flat: dict[str, np.ndarray], path: str) -> None:
    """Refuse parameters that no fitted model has: non-finite `Ab`, `Q` that is not symmetric
    positive definite, `pi` with negative entries or rows that do not sum to 1 (within 1e-3)."""
    def get(name, ndim):
        if name not in flat:
            raise ValueError(f"cannot read a model from {path!r}: it has no array {name!r}.")
        a = np.asarray(flat[name])
        if a.ndim != ndim or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"cannot read a model from {path!r}: {name!r} must be a {ndim}-D numeric array; "
                             f"got shape {a.shape}, dtype {a.dtype}.")
        return a.astype(np.float64)

    def fail(name, k, what):
        raise ValueError(f"model file {path!r}: {name} of state {k} {what}; it is not a valid fitted model.")

    grouped = "states/groups" in flat  # per-group transition matrices: pi is (G, K, K), rows checked alike
    Ab, Q = get("params/Ab", 3), get("params/Q", 3)
    pi = get("params/pi", 3).reshape(-1, Ab.shape[-3]) if grouped else get("params/pi", 2)
    for k in range(Ab.shape[0]):
        if not np.isfinite(Ab[k]).all():
            fail("params/Ab", k, "holds NaN or inf")
    for k in range(Q.shape[0]):
        q = Q[k]
        if not np.isfinite(q).all():
            fail("params/Q", k, "holds NaN or inf")
        if q.shape[0] != q.shape[1] or not np.allclose(q, q.T, rtol=1e-4, atol=1e-6 * np.abs(q).max()):
            fail("params/Q", k, "is not symmetric")
        try:
            np.linalg.cholesky(q)
        except np.linalg.LinAlgError:
            fail("params/Q", k, "is not positive definite")
    for k in range(pi.shape[0]):
        row = pi[k]
        if not np.isfinite(row).all() or (row < 0).any():
            fail("params/pi", k, "(its row of transition probabilities) has negative, NaN or inf entries")
        if abs(row.sum() - 1) > 1e-3:
            fail("params/pi", k, f"(its row of transition probabilities) sums to {row.sum():.6g}, not 1")


def _import_h5py():
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading and writing .h5 files needs h5py: `pip install h5py` (or 'arhmm_eqx[hdf5]').") from e
    return h5py
