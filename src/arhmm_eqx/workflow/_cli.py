"""Command line `arhmm-eqx` (or `python -m arhmm_eqx`): `fit`, `resume`, `apply` and `demo`.

An output folder of `fit` holds `run.json` (the options and the data file), `checkpoints/`,
and once the fit is done `model.npz` (the fitted model, states relabelled by usage, in the
reference dict layout), the result tables of `save_results` and the figures (`*.png`).
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

from ._files import atomic_write


DEFAULT_DEMO_DIR = "arhmm-demo"
_EXIT_INTERRUPTED, _EXIT_ERROR = 130, 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must fit in 64 bits (-2**63 <= seed < 2**63), got {text}")
    return value


_seed.__name__ = "int"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="arhmm-eqx", description="Sticky HDP AR-HMMs fitted by Gibbs sampling.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fit = sub.add_parser("fit", help="fit recordings from a .npz or .h5 file (one (frames, D) array per recording)")
    fit.add_argument("data", help="recordings: .npz, .h5 or .hdf5; NaN frames are treated as missing")
    fit.add_argument("--out", required=True, help="output folder (checkpoints, results, figures)")
    fit.add_argument("--num-states", type=_positive(int), default=100, help="maximum number of states K")
    fit.add_argument("--nlags", type=_positive(int), default=3, help="autoregressive order (frames of history)")
    fit.add_argument("--kappa", type=_positive(float), default=1e6, help="stickiness (sets how long states last)")
    fit.add_argument("--alpha", type=_positive(float), default=5.7, help="HDP concentration of the transitions")
    fit.add_argument("--gamma", type=_positive(float), default=1e3, help="top-level HDP concentration")
    fit.add_argument("--learn-concentrations", action="store_true",
                     help="learn --alpha and --gamma by Gibbs sampling (Gamma priors with means at the given "
                          "values); --kappa stays fixed")
    fit.add_argument("--learn-kappa", action="store_true",
                     help="learn --kappa too, with --alpha (prior: alpha + kappa ~ Gamma with mean at the given "
                          "sum, kappa / (alpha + kappa) ~ Uniform); implies --learn-concentrations")
    fit.add_argument("--s0-scale", type=_positive(float), default=0.01, help="prior scale of the noise covariances")
    fit.add_argument("--k0-scale", type=_positive(float), default=10.0, help="prior scale of the AR matrices")
    fit.add_argument("--iters", type=_positive(int), default=1000, help="Gibbs sweeps")
    fit.add_argument("--save-every", type=_positive(int), default=100, help="checkpoint every this many sweeps")
    fit.add_argument("--seed", type=_seed, default=0, help="random seed of the initialisation and the chain")
    fit.add_argument("--segment-length", type=_positive(int), default=None,
                     help="cut recordings into overlapping segments of this many frames")
    fit.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                     help="centre and scale each dimension first")
    fit.add_argument("--groups", default=None, metavar="GROUPS.csv",
                     help="CSV of `recording,group` rows (a header row is optional): one transition matrix per "
                          "group (genotype, treatment, ...), sharing the states and their dynamics")
    fit.add_argument("--sequence-chunk", type=_positive(int), default=None,
                     help="sample states this many sequences at a time (bounds memory)")
    fit.add_argument("--robust", action="store_true",
                     help="Student-t AR noise: outliers (tracking glitches) do not make states of their own")
    fit.add_argument("--nu", type=_positive(float), default=None,
                     help="with --robust: start value of every state's degrees of freedom nu (default 4)")
    fit.add_argument("--fix-nu", action="store_true", help="with --robust: keep nu at its start value")
    res = sub.add_parser("resume", help="continue a fit from its newest checkpoint, then write the results")
    res.add_argument("out", help="output folder of an earlier `fit`")
    res.add_argument("--iters", type=_positive(int), default=None,
                     help="total sweeps of the chain (default: the --iters of the fit)")
    app = sub.add_parser("apply", help="label new recordings with a fitted model (most likely state path)")
    app.add_argument("fitted", help="output folder of a finished `fit`")
    app.add_argument("data", help="new recordings: .npz, .h5 or .hdf5")
    app.add_argument("--out", required=True, help="output folder for the states, tables and figures")
    demo = sub.add_parser("demo", help="simulate recordings, fit them with checkpoints, write results and figures")
    demo.add_argument("--out", default=DEFAULT_DEMO_DIR, help="output folder")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed")
    demo.add_argument("--frames", type=_positive(int), default=1500, help="frames of the longest recording")
    demo.add_argument("--sequences", type=_positive(int), default=4, help="number of recordings")
    demo.add_argument("--iters", type=_positive(int), default=100, help="Gibbs sweeps")
    for sp in (fit, res, demo):
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    for sp in (fit, res):
        sp.add_argument("--distributed", action="store_true",
                        help="one of several processes (jax.distributed): the cluster (SLURM, ...) is detected, or "
                             "set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID; the sequences are "
                             "split over every device and process 0 writes")
    for sp in (fit, res, app, demo):
        sp.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    return p


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_data(path, options: dict, standardizer=None):
    """Recordings -> (standardised) -> `Dataset`; returns `(dataset, standardizer or None)`."""
    from ._data import Standardizer, load_recordings, prepare_recordings, standardize

    recs = load_recordings(path)
    if standardizer is not None:
        recs = Standardizer(mean=standardizer["mean"], matrix=standardizer["matrix"]).apply(recs)
    elif options["standardize"]:
        recs, standardizer = standardize(recs)
        standardizer = {"mean": standardizer.mean, "matrix": standardizer.matrix}
    dataset = prepare_recordings(recs, nlags=options["nlags"], segment_length=options["segment_length"],
                                 groups=options.get("groups"))
    return dataset, standardizer


def read_groups_csv(path) -> dict[str, str]:
    """`{recording: group}` from a CSV of `recording,group` rows; a first row `recording,group`
    (any capitalisation) is a header. Errors name the file and the row."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--groups: {str(path)!r} does not exist; pass a CSV of `recording,group` rows.")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["recording", "group"]:
        rows = rows[1:]
    out: dict[str, str] = {}
    for i, row in enumerate(rows, 1):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"--groups: row {i} of {str(path)!r} is {row!r}; each row must be `recording,group`.")
        name, group = row[0].strip(), row[1].strip()
        if name in out and out[name] != group:
            raise ValueError(f"--groups: recording {name!r} has two groups in {str(path)!r} "
                             f"({out[name]!r}, {group!r}).")
        out[name] = group
    if not out:
        raise ValueError(f"--groups: {str(path)!r} has no `recording,group` rows.")
    return out


_TABLES = ("results.npz", "states.csv", "usages.csv", "durations.csv", "transitions.csv")
_FIGURES = ("traces.png", "states.png", "usages.png", "durations.png", "transitions.png")
# what identifies a fit's chain in run.json; kept in every checkpoint and compared by `resume`
_CHAIN_OPTIONS = ("seed", "data_sha256", "num_states", "nlags", "kappa", "alpha", "gamma", "s0_scale", "k0_scale",
                  "segment_length", "standardize", "sequence_chunk")


def _fit_outputs(options: dict) -> list[str]:
    return ["run.json", "checkpoints", "model.npz", *_TABLES, *_FIGURES] + (
        ["standardizer.npz"] if options["standardize"] else []) + (
        ["group_usages.csv"] if options.get("groups") else [])


def _chain_keys(seed: int):
    import jax.random as jr

    return jr.split(jr.key(seed))  # (initialisation, chain)


def fit_job(data, out, options: dict, *, progress: bool = True, demo: bool = False, folder=None) -> int:
    """`arhmm-eqx fit`: check everything, prepare the data, write `run.json`, fit with checkpoints, write results.

    Nothing is written before the data, the options and the output folder are checked: the
    folder may hold only files that an earlier run of this kind wrote (see `_outdir.py`).
    """
    import numpy as np

    from .._hyperparams import Hyperparams
    from .._model import ARHMM
    from ._checkpoint import list_checkpoints
    from ._fit import fit
    from ._outdir import OutputFolder, refuse_input_among_outputs

    out = Path(out)
    names = _fit_outputs(options)
    refuse_input_among_outputs(data, out, names)
    folder = folder or OutputFolder(out, "demo" if demo else "fit")

    def check_folder():
        folder.check(names)
        if (out / "run.json").exists() and list_checkpoints(out / "checkpoints"):
            raise ValueError(f"{str(out)!r} already holds a fit; continue it with `arhmm-eqx resume {out}` "
                             "or choose another --out.")

    check_folder()
    dataset, standardizer = _load_data(data, options)
    o = options
    hp = Hyperparams.from_scales(o["num_states"], dataset.latent_dim, o["nlags"], alpha=o["alpha"], gamma=o["gamma"],
                                 kappa=o["kappa"], S_0_scale=o["s0_scale"], K_0_scale=o["k0_scale"],
                                 num_groups=dataset.num_groups, concentrations=_concentration_prior(o),
                                 robust=_robust_prior(o))
    key_init, key_fit = _chain_keys(o["seed"])
    model = ARHMM.from_prior(hp, dataset.x, dataset.mask, key=key_init, groups=dataset.groups)
    run = {"data": str(Path(data).resolve()), "data_sha256": _sha256(data), "demo": demo, **options}
    leader = _barrier("checked")  # every process has checked the folder before process 0 writes to it
    if leader:
        folder.open(names)
    try:
        if leader:
            check_folder()  # again, under the lock
            if standardizer is not None:
                buffer = io.BytesIO()
                np.savez(buffer, **standardizer)
                atomic_write(out / "standardizer.npz", buffer.getvalue())
            _write_run(out, run)
            print(f"{len(dataset.names)} recordings, {dataset.num_valid} frames with a state, D = "
                  f"{dataset.latent_dim}; fitting {o['iters']} sweeps, checkpoints in {out / 'checkpoints'}",
                  file=sys.stderr)
        with _quiet_nonfinite():
            result = fit(model, dataset.x, dataset.mask, key=key_fit, num_iters=o["iters"],
                         checkpoint_dir=out / "checkpoints", save_every=o["save_every"], progress=progress,
                         sequence_chunk=o["sequence_chunk"], metadata={"run": _chain_identity(run)},
                         mesh=_process_mesh(dataset.x.shape[0]))
        return _finish(out, result, dataset, _chain_keys(o["seed"])[1]) if leader else _follower_exit(result)
    finally:
        if leader and folder.kind == "fit":
            folder.close()


def _barrier(name: str) -> bool:
    """With several processes (`--distributed`), wait for all of them; returns whether this is
    process 0, the one that writes."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"arhmm-eqx: {name}")
    return jax.process_index() == 0


def _process_mesh(num_sequences: int):
    """With several processes, a mesh over every device that splits the sequences as evenly as
    they divide (the rest of the devices repeat the chain); None with one process."""
    import math

    import jax

    from .._sharding import chain_mesh

    if jax.process_count() == 1:
        return None
    return chain_mesh(math.gcd(num_sequences, jax.device_count()))


def _follower_exit(result) -> int:
    """The exit code of a process other than 0 (which reports and writes the results)."""
    return {"completed": 0, "interrupted": _EXIT_INTERRUPTED}.get(result.stopped_reason, _EXIT_ERROR)


def _chain_identity(run: dict) -> dict:
    identity = {k: run[k] for k in _CHAIN_OPTIONS}
    if run.get("groups") is not None:  # a grouped fit: its groups are part of the chain
        identity["groups"] = run["groups"]
    # the learning flags only when set, so that the runs of earlier versions keep their identity;
    # a robust fit's options too (absent from the run files of Gaussian fits)
    return identity | {k: True for k in _LEARN_OPTIONS if run.get(k)} | {k: run[k] for k in _ROBUST_OPTIONS
                                                                         if k in run}


_LEARN_OPTIONS = ("learn_concentrations", "learn_kappa")
_ROBUST_OPTIONS = ("robust", "nu", "fix_nu")


def _concentration_prior(o: dict):
    """The `ConcentrationPrior` of the fit's options (None when nothing is learned)."""
    from .._concentrations import ConcentrationPrior

    if not (o.get("learn_concentrations") or o.get("learn_kappa")):
        return None
    return ConcentrationPrior.around(o["alpha"], o["gamma"], o["kappa"], learn_kappa=bool(o.get("learn_kappa")))


def _robust_prior(options: dict):
    """The `RobustPrior` of `--robust` (None without it)."""
    if not options.get("robust"):
        return None
    from .._robust import RobustPrior

    return RobustPrior(nu_init=options["nu"], resample_nu=not options["fix_nu"])


def _check_same_chain(meta: dict, run: dict, out: Path) -> None:
    """Refuse a checkpoint that is not of the chain `run.json` describes (seed, data, options)."""
    from ._checkpoint import key_meta

    name = Path(meta["path"]).name
    expected = {"states_only": False, "sequence_chunk": run["sequence_chunk"], "parallel": False}
    saved = meta["user"].get("run") if isinstance(meta.get("user"), dict) else None
    problems = []
    if key_meta(meta["key"])["data"] != key_meta(_chain_keys(run["seed"])[1])["data"]:
        problems.append(f"its key is not that of --seed {run['seed']}")
    if saved != _chain_identity(run):
        differ = sorted(k for k in (*_CHAIN_OPTIONS, "groups", *_LEARN_OPTIONS, *_ROBUST_OPTIONS)
                        if not isinstance(saved, dict) or saved.get(k) != _chain_identity(run).get(k))
        problems.append("its " + ", ".join(differ) + " differ" + ("s" if len(differ) == 1 else ""))
    if meta["sweep_options"] != expected:
        problems.append("its sweep options differ")
    if (meta["num_states"], meta["nlags"]) != (run["num_states"], run["nlags"]):
        problems.append("its sizes differ")
    if meta["trace_length"] != meta["iteration"]:
        problems.append(f"its trace has {meta['trace_length']} sweeps, not {meta['iteration']}")
    if problems:
        raise ValueError(f"checkpoint {name} in {str(out / 'checkpoints')!r} is not of the fit that run.json "
                         f"describes ({'; '.join(problems)}); refusing to continue another chain. Remove it (an "
                         "earlier checkpoint is then used) or start a new fit.")


def resume_job(out, iters: int | None, *, progress: bool = True) -> int:
    """`arhmm-eqx resume`: reload the data of `run.json`, continue from the newest checkpoint."""
    from ._checkpoint import list_checkpoints, load_checkpoint
    from ._fit import FitResult, resume
    from ._outdir import OutputFolder

    out = Path(out)
    run = _read_run(out)
    names = _fit_outputs(run)
    folder = OutputFolder(out, "demo" if run["demo"] else "fit")
    folder.check(names)
    if not Path(run["data"]).is_file():
        raise FileNotFoundError(f"the data file of this fit, {run['data']!r}, does not exist any more.")
    if _sha256(run["data"]) != run["data_sha256"]:
        raise ValueError(f"the data file {run['data']!r} changed since the fit started; resume needs the same data.")
    standardizer = _read_standardizer(out) if run["standardize"] else None
    dataset, _ = _load_data(run["data"], run, standardizer)
    target = run["iters"] if iters is None else iters
    if not list_checkpoints(out / "checkpoints"):
        raise ValueError(f"{str(out)!r} has no checkpoint yet (the fit stopped before its first one); start it "
                         f"again with `arhmm-eqx fit {run['data']} --out {out}` and the same options.")
    model, meta = load_checkpoint(out / "checkpoints")
    _check_same_chain(meta, run, out)
    leader = _barrier("checked")  # every process has read the same checkpoint before process 0 writes
    if leader:
        folder.open(names)
    try:
        if leader and iters is not None and iters != run["iters"]:
            run["iters"] = iters
            _write_run(out, run)
        done = meta["iteration"]
        if target <= done:
            if leader:
                print(f"the chain is at sweep {done} ({Path(meta['path']).name}); writing its results",
                      file=sys.stderr)
            result = FitResult(model, meta["infos"], done, "completed", done - int(meta["infos"].ok.shape[0]),
                               Path(meta["path"]))
        else:
            if leader:
                print(f"resuming from {Path(meta['path']).name} (sweep {done}) to sweep {target}", file=sys.stderr)
            with _quiet_nonfinite():
                result = resume(meta["path"], dataset.x, dataset.mask, num_iters=target - done,
                                save_every=run["save_every"], progress=progress,
                                sequence_chunk=run["sequence_chunk"], mesh=_process_mesh(dataset.x.shape[0]))
        return _finish(out, result, dataset, _chain_keys(run["seed"])[1]) if leader else _follower_exit(result)
    finally:
        if leader:
            folder.close()


@contextlib.contextmanager
def _quiet_nonfinite():
    """Silence `fit`'s warning about a non-finite sweep (the command line reports it in one line)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Gibbs sweep .* produced non-finite", category=RuntimeWarning)
        yield


def _write_run(out: Path, run: dict) -> None:
    atomic_write(out / "run.json", json.dumps(run, indent=1).encode())


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_pos(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


_RUN_FIELDS = {
    "data": lambda v: isinstance(v, str), "data_sha256": lambda v: isinstance(v, str),
    "standardize": lambda v: isinstance(v, bool), "seed": lambda v: _is_int(v) and -(2**63) <= v < 2**63,
    **{k: lambda v: _is_int(v) and v > 0 for k in ("num_states", "nlags", "iters", "save_every")},
    **{k: _is_pos for k in ("kappa", "alpha", "gamma", "s0_scale", "k0_scale")},
    **{k: lambda v: v is None or (_is_int(v) and v > 0) for k in ("segment_length", "sequence_chunk")},
}


def _read_run(out: Path) -> dict:
    """`run.json` of an output folder, with every field the commands use checked."""
    path = out / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(out)!r} is not the output folder of `arhmm-eqx fit` (no run.json in it).")
    try:
        run = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}).") from None
    if not isinstance(run, dict):
        raise ValueError(f"{str(path)!r} is not the run file of `arhmm-eqx fit` (not a JSON object).")
    missing = [k for k in _RUN_FIELDS if k not in run]
    wrong = [k for k, ok in _RUN_FIELDS.items() if k in run and not ok(run[k])]
    if missing or wrong:
        what = "; ".join(filter(None, [missing and "missing " + ", ".join(missing),
                                       wrong and "invalid " + ", ".join(wrong)]))
        raise ValueError(f"{str(path)!r} is damaged or not from this version of arhmm-eqx ({what}).")
    run.setdefault("demo", False)
    groups = run.setdefault("groups", None)
    if groups is not None and not (isinstance(groups, dict) and groups
                                   and all(isinstance(k, str) and isinstance(v, str) for k, v in groups.items())):
        raise ValueError(f"{str(path)!r} is damaged or not from this version of arhmm-eqx (invalid groups).")
    return run


def _read_standardizer(out: Path) -> dict:
    import numpy as np

    from ._files import read_npz

    path = out / "standardizer.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; this fit was standardised and needs it.")
    arrays = read_npz(path)
    mean, matrix = arrays.get("mean"), arrays.get("matrix")
    ok = (isinstance(mean, np.ndarray) and isinstance(matrix, np.ndarray) and mean.ndim == 1 and matrix.ndim == 2
          and matrix.shape[1] == mean.shape[0] and np.issubdtype(mean.dtype, np.floating)
          and np.issubdtype(matrix.dtype, np.floating) and np.isfinite(mean).all() and np.isfinite(matrix).all()
          and (np.abs(matrix).sum(axis=1) > 0).all())
    if not ok:
        raise ValueError(f"{str(path)!r} is damaged: it must hold a finite float `mean` (D,) and `matrix` (E, D) "
                         "with no zero row.")
    return {"mean": mean, "matrix": matrix}


def _finish(out: Path, result, dataset, key) -> int:
    """Relabel by usage, write `model.npz`, the result tables and the figures; report how the fit ended.
    `model.npz` stores as its `seed` the key of the chain's next sweep (`fold_in(key, iteration)`)."""
    import jax.random as jr

    from ._checkpoint import save_moseq_model
    from ._results import relabel_by_usage, save_results, summarize

    if result.stopped_reason == "interrupted":
        saved = (f"checkpoint {Path(result.checkpoint).name} saved. Continue with: arhmm-eqx resume {out}"
                 if result.checkpoint is not None else "no checkpoint was saved")
        print(f"interrupted after sweep {result.iteration}; {saved}", file=sys.stderr)
        return _EXIT_INTERRUPTED
    if result.stopped_reason == "nonfinite":
        print(f"arhmm-eqx: error: sweep {result.iteration + 1} produced non-finite values; the model after sweep "
              f"{result.iteration} is checkpointed in {out / 'checkpoints'}. Standardise the data or check it for "
              "extreme values.", file=sys.stderr)
        return _EXIT_ERROR
    model, _ = relabel_by_usage(result.model, dataset.mask)
    save_moseq_model(out / "model.npz", model, key=jr.fold_in(key, result.iteration))
    results = summarize(model, dataset)
    save_results(results, out)
    if results.concentrations is not None:
        print("learned " + ", ".join(f"{k} = {v:.6g}" for k, v in results.concentrations.items()), file=sys.stderr)
    _save_plots(out, results, result.infos, result.first_iter)
    print(f"wrote results and figures to {out}", file=sys.stderr)
    return 0


def _save_plots(out: Path, results, infos=None, first_iter: int = 0) -> None:
    import numpy as np

    from ._plots import (
        plot_durations,
        plot_state_raster,
        plot_traces,
        plot_transition_matrix,
        plot_usages,
        save_figures,
    )

    used = int((results.usages > 0).sum())
    figures = {}
    if infos is not None and infos.ok.shape[0] > 0:
        figures["traces"] = plot_traces(infos, start_iter=first_iter)
    figures["states"] = plot_state_raster(results.states, num_states=results.num_states)
    figures["usages"] = plot_usages(results.usages, sort=True)
    if np.size(results.durations):
        figures["durations"] = plot_durations(results.durations)
    figures["transitions"] = plot_transition_matrix(results.transition_matrix(self_transitions=False),
                                                    max_states=max(used, 1))
    save_figures(figures, out)


def apply_job(fitted, data, out) -> int:
    """`arhmm-eqx apply`: the most likely state path (Viterbi) of new recordings under a fitted model."""
    from .._model import ARHMM
    from .._states import States
    from ._checkpoint import load_moseq_model
    from ._outdir import OutputFolder, refuse_input_among_outputs
    from ._results import save_results, summarize

    fitted, out = Path(fitted), Path(out)
    names = ["apply.json", *_TABLES, *_FIGURES[1:]]
    refuse_input_among_outputs(data, out, names)
    folder = OutputFolder(out, "apply")
    folder.check(names)
    run = _read_run(fitted)
    if not (fitted / "model.npz").is_file():
        raise FileNotFoundError(f"{str(fitted)!r} has no fitted model (model.npz); finish the fit first with "
                                f"`arhmm-eqx resume {fitted}`.")
    if run.get("groups") is not None:
        raise ValueError(f"{str(fitted)!r} is a fit with groups (--groups); `apply` takes fits without groups.")
    model = load_moseq_model(fitted / "model.npz")
    standardizer = _read_standardizer(fitted) if run["standardize"] else None
    dataset, _ = _load_data(data, run, standardizer)
    if dataset.latent_dim != model.hyperparams.latent_dim:
        raise ValueError(f"{data!r} has D = {dataset.latent_dim} dimensions but the model was fitted with "
                         f"D = {model.hyperparams.latent_dim}.")
    z = model.most_likely_states(dataset.x, dataset.mask, fill_value=None)
    labelled = ARHMM(model.hyperparams, model.params, States(z=z))
    results = summarize(labelled, dataset)
    folder.open(names)
    try:
        save_results(results, out)
        _save_plots(out, results)
        atomic_write(out / "apply.json", json.dumps({"model": str((fitted / "model.npz").resolve()),
                                                      "data": str(Path(data).resolve())}, indent=1).encode())
    finally:
        folder.close()
    print(f"wrote the states of {len(dataset.names)} recordings to {out}", file=sys.stderr)
    return 0


def demo_job(out, *, seed: int, num_recordings: int, num_frames: int, iters: int, progress: bool = True) -> int:
    """`arhmm-eqx demo`: simulate recordings into `out/demo_recordings.npz`, then fit them like `fit`."""
    import numpy as np

    from ._demo import DEMO_SIZES, print_report, simulate_recordings
    from ._outdir import OutputFolder

    out = Path(out)
    if num_frames < 60:
        raise ValueError(f"--frames must be at least 60; got {num_frames}.")
    options = {"num_states": DEMO_SIZES["num_states"], "nlags": DEMO_SIZES["nlags"], "kappa": 1e3, "alpha": 5.7,
               "gamma": 1e3, "s0_scale": 0.01, "k0_scale": 10.0, "iters": iters, "save_every": max(1, iters // 4),
               "seed": seed, "segment_length": None, "standardize": True, "sequence_chunk": None}
    names = ["demo_recordings.npz", *_fit_outputs(options)]
    folder = OutputFolder(out, "demo")
    manifest = folder.manifest() if out.is_dir() else None
    if manifest is not None and manifest["kind"] != "demo":
        raise ValueError(f"{str(out)!r} holds a {manifest['kind']} that is not a demo; choose another --out.")
    folder.check(names)  # files an earlier demo wrote may be replaced, nothing else
    import jax.random as jr

    # folded from the seed, so that the simulation's keys never equal those the fit splits from it
    sim_key = jr.fold_in(jr.key(seed), 1_000_003)
    recordings, truth = simulate_recordings(key=sim_key, num_recordings=num_recordings, num_frames=num_frames)
    fit_dir = out
    folder.open(names)
    try:
        _clear_demo(out)
        data = out / "demo_recordings.npz"
        buffer = io.BytesIO()
        np.savez(buffer, **recordings)
        atomic_write(data, buffer.getvalue())
        start = time.perf_counter()
        code = fit_job(data, fit_dir, options, progress=progress, demo=True, folder=folder)
    finally:
        folder.close()
    if code != 0:
        return code
    with np.load(fit_dir / "results.npz") as f:
        fitted = {name: f[f"states/{name}"] for name in recordings}
    from ._checkpoint import load_checkpoint

    _, meta = load_checkpoint(fit_dir / "checkpoints")
    print(f"Simulated {num_recordings} recordings of {min(len(r) for r in recordings.values())} to {num_frames} "
          f"frames from {DEMO_SIZES['num_true']} states (D = {DEMO_SIZES['latent_dim']}, nlags = "
          f"{DEMO_SIZES['nlags']}), with gaps of missing frames: {data}")
    print_report(frames=sum(len(r) for r in recordings.values()), sweeps=iters, seconds=time.perf_counter() - start,
                 log_joint_x=meta["infos"].log_joint_x, fitted=fitted, truth=truth, num_true=DEMO_SIZES["num_true"],
                 num_fit=DEMO_SIZES["num_states"])
    print(f"Results, figures (*.png) and checkpoints are in {fit_dir}")
    return 0


def _clear_demo(out: Path) -> None:
    """Remove the run file and checkpoints of an earlier demo in `out`, so that a new demo starts afresh
    (`demo_job` has checked that `out` holds nothing but a demo)."""
    from ._checkpoint import list_checkpoints

    for path in list_checkpoints(out / "checkpoints"):
        path.with_suffix(".eqx").unlink(missing_ok=True)
        path.unlink()
    (out / "run.json").unlink(missing_ok=True)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    progress = not getattr(args, "no_progress", False)
    try:
        if getattr(args, "distributed", False):
            from ._distributed import init_distributed

            init_distributed()
        if args.command == "fit":
            options = {k: getattr(args, k) for k in ("num_states", "nlags", "kappa", "alpha", "gamma", "s0_scale",
                                                     "k0_scale", "iters", "save_every", "seed", "segment_length",
                                                     "standardize", "sequence_chunk")}
            if args.groups is not None:  # only then, so a fit without groups keeps the run file of before
                options["groups"] = read_groups_csv(args.groups)
            options.update({k: True for k in _LEARN_OPTIONS if getattr(args, k)})  # absent when off, as before
            if args.robust:
                options.update(robust=True, nu=4.0 if args.nu is None else args.nu, fix_nu=args.fix_nu)
            elif args.nu is not None or args.fix_nu:
                raise ValueError("--nu and --fix-nu set the Student-t noise of --robust; add --robust.")
            return fit_job(args.data, args.out, options, progress=progress)
        if args.command == "resume":
            return resume_job(args.out, args.iters, progress=progress)
        if args.command == "apply":
            return apply_job(args.fitted, args.data, args.out)
        return demo_job(args.out, seed=args.seed, num_recordings=args.sequences, num_frames=args.frames,
                        iters=args.iters, progress=progress)
    except (ValueError, TypeError, OSError, ImportError, MemoryError) as e:
        message = str(e).replace("\n", " ")
        print(f"arhmm-eqx: error: {message}", file=sys.stderr)
        return _EXIT_ERROR
    except KeyboardInterrupt:
        print("arhmm-eqx: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
    except Exception as e:  # a bug: still one line (the promise of the README), naming the exception
        if getattr(args, "distributed", False) and type(e).__name__ == "JaxRuntimeError":
            _lost_process(e, args)
        message = f"{type(e).__name__}: {e}".replace("\n", " ")
        print(f"arhmm-eqx: error: unexpected {message} (please report this)", file=sys.stderr)
        return _EXIT_ERROR


def _lost_process(error: Exception, args) -> None:
    """A collective between the processes failed: another process stopped. Say so in one line and
    leave at once; JAX's orderly shutdown would wait for the lost process, then abort."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    out = args.out
    print(f"arhmm-eqx: error: another process of this --distributed run stopped ({first[:300]}). Continue from "
          f"the last checkpoint with `arhmm-eqx resume {out} --distributed` on every process.", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_ERROR)


def _exit(code: int) -> None:
    """Exit with `code`. After Ctrl-C, XLA may still be compiling on its own threads and the
    interpreter's teardown can crash inside it (a segfault, exit 139): flush, then leave
    without the teardown."""
    if code == _EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def cli() -> None:
    """The `arhmm-eqx` console script: `main` with the exit of `_exit`."""
    _exit(main())


if __name__ == "__main__":
    cli()
