"""Compile time of each public program, and warm time of the decoding programs.

Each workload runs in a fresh process with JAX's persistent compilation cache off, so every
first call compiles. Compile time is the first call minus the median of warm calls (the
program's run time), as `bench_sweep.py` measures it. Run from the repository root:

    .venv/bin/python benchmarks/bench_compile.py                  # moseq and secondary
    .venv/bin/python benchmarks/bench_compile.py --only secondary
    .venv/bin/python benchmarks/bench_compile.py --custom 4 2000 5 2 20
    .venv/bin/python benchmarks/bench_compile.py --sweep-only --rounds 5 --reference PATH/TO/REFERENCE/bin/python

`--reference PYTHON` also measures the sweep of the reference implementation, jax-moseq's
`jax_moseq.models.arhmm.resample_model`, run by an interpreter that has it installed (a
separate virtual environment: `pip install jax-moseq==0.3.7`; it is no dependency of this
package). Its sweep is several compiled programs plus a numba-compiled table-count sampler;
its compile time is likewise its first sweep minus the median of warm sweeps, after
`jax.clear_caches()` so that nothing compiled by `init_model` is reused.

Column `direct`: the compilation time reported by JAX itself during the first call
(tracing, lowering to MLIR and XLA's compilation, summed over every program it compiles;
for the reference, numba's compilation is added), which does not depend on how long the
program runs; the first-minus-warm difference does, and is noisy when warm calls are long
and the machine is loaded. `--rounds R`
repeats every measurement in R fresh processes, ours and the reference's interleaved (the
machine's load then affects both alike), and reports the median and the range.

Programs: `from_prior`, one Gibbs sweep (`resample`), a 10-sweep `run_chain`,
`marginal_log_likelihood`, `stateseq_marginals` and `most_likely_states` (Viterbi). Columns:
compile (s) and warm (s, median of --repeats calls). Timings are machine- and load-dependent:
compare rows of one run, not runs on different machines.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


WORKLOADS = {
    # name: (N, T, D, L, K)
    "moseq": (20, 36_000, 10, 3, 100),
    "secondary": (10, 10_000, 10, 3, 50),
}


def _data(N, T, D):
    import numpy as np

    rng = np.random.default_rng(0)
    return np.cumsum(0.1 * rng.normal(size=(N, T, D)), axis=1).astype(np.float32), np.ones((N, T), np.float32)


_JAX_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def _time_program(call, repeats, first_call_context=None):
    """Times of `call(i)`: `compile` (first call minus median warm call), `warm` (median warm
    call) and `jax` (the tracing, lowering and XLA compilation that JAX itself reports
    during the first call: a direct measure, unaffected by the run time of the program).

    `first_call_context`, if given, is a context manager around the first call that yields
    a list to which it adds further compile durations (the reference's numba compilation).
    """
    import contextlib

    import jax
    import jax.monitoring
    import numpy as np

    durations = []

    def listener(event, duration, **kwargs):
        if event in _JAX_COMPILE_EVENTS:
            durations.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    with first_call_context() if first_call_context else contextlib.nullcontext([]) as extra:
        start = time.perf_counter()
        jax.block_until_ready(call(1))
        first = time.perf_counter() - start
    jax.monitoring.unregister_event_duration_listener(listener)
    direct = sum(durations) + sum(extra)
    warm = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call(2 + i))
        warm.append(time.perf_counter() - start)
    warm = float(np.median(warm))
    return {"compile": first - warm, "warm": warm, "jax": direct}


def reference_child(N, T, D, L, K, repeats):
    """The sweep of jax-moseq (`resample_model`), with the same data and prior as ours."""
    import contextlib

    import jax
    import jax.numpy as jnp
    import jax.random as jr
    from jax_moseq.models import arhmm

    x, mask = _data(N, T, D)
    data = {"x": jnp.asarray(x), "mask": jnp.asarray(mask)}
    model = arhmm.init_model(
        data,
        seed=jr.PRNGKey(0),
        trans_hypparams={"num_states": K, "alpha": 5.7, "gamma": 1e3, "kappa": 1e6},
        ar_hypparams={"latent_dim": D, "nlags": L, "S_0_scale": 0.01, "K_0_scale": 10.0},
    )
    jax.block_until_ready(model)
    jax.clear_caches()  # init_model compiled the state step: compile it again in the first sweep

    def call(i):
        m = dict(model, seed=jr.PRNGKey(i))
        return arhmm.resample_model(data, **m)

    @contextlib.contextmanager
    def numba_compile():
        from numba.core import event

        extra = []
        with event.install_timer("numba:compile", extra.append):
            yield extra

    print(json.dumps({"sweep (resample)": _time_program(call, repeats, numba_compile)}))


def child(N, T, D, L, K, repeats, sweep_only=False):
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import arhmm_eqx as ae

    x, mask = (jnp.asarray(a) for a in _data(N, T, D))
    hp = ae.Hyperparams.from_scales(K, D, L)
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(0))  # a model for the methods below (compiles from_prior)
    programs = {
        "from_prior": lambda i: ae.ARHMM.from_prior(hp, x, mask, key=jr.key(i)),
        "sweep (resample)": lambda i: model.resample(x, mask, key=jr.key(i)),
        "run_chain (10 sweeps)": lambda i: ae.run_chain(jr.key(i), model, x, mask, 10),
        "marginal_log_likelihood": lambda i: model.marginal_log_likelihood(x, mask),
        "stateseq_marginals": lambda i: model.stateseq_marginals(x, mask),
        "most_likely_states": lambda i: model.most_likely_states(x, mask),
    }
    if sweep_only:
        print(json.dumps({"sweep (resample)": _time_program(programs["sweep (resample)"], repeats)}))
        return
    rows = {name: _time_program(call, repeats) for name, call in programs.items()}
    # from_prior was compiled once before its row: its "first" call was warm. Measure its
    # compile in the only honest way left, lowering and compiling it again from scratch.
    jax.clear_caches()
    start = time.perf_counter()
    jax.block_until_ready(ae.ARHMM.from_prior(hp, x, mask, key=jr.key(99)))
    rows["from_prior"]["compile"] = time.perf_counter() - start - rows["from_prior"]["warm"]
    print(json.dumps(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(WORKLOADS))
    parser.add_argument("--custom", nargs=5, type=int, metavar=("N", "T", "D", "L", "K"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-only", action="store_true", help="measure only the Gibbs sweep")
    parser.add_argument("--reference", metavar="PYTHON", help="an interpreter with jax-moseq installed")
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes per measurement (interleaved)")
    parser.add_argument("--child", nargs=5, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reference-child", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.repeats, sweep_only=args.sweep_only)
    if args.reference_child:
        return reference_child(*args.reference_child, args.repeats)
    workloads = {"custom": tuple(args.custom)} if args.custom else (
        {args.only: WORKLOADS[args.only]} if args.only else WORKLOADS)
    # No persistent compilation cache, in this package or in JAX, so every first call compiles.
    env = dict(os.environ, ARHMM_EQX_COMPILE_CACHE="0", JAX_ENABLE_COMPILATION_CACHE="false")
    runners = {"ours": [sys.executable, __file__, "--child"]}
    if args.reference:
        runners["reference"] = [args.reference, __file__, "--reference-child"]
    print(f"{'workload':10s} {'impl':9s} {'program':26s} {'compile s':>10s} {'(min-max)':>13s} "
          f"{'direct s':>9s} {'(min-max)':>13s} {'warm s':>9s}")
    for name, sizes in workloads.items():
        results = {impl: {} for impl in runners}
        for _ in range(args.rounds):
            for impl, cmd in runners.items():
                extra = ["--sweep-only"] if args.sweep_only and impl == "ours" else []
                out = subprocess.run([*cmd, *map(str, sizes), "--repeats", str(args.repeats), *extra],
                                     capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(f"{name} {impl}: failed\n{out.stderr[-3000:]}")
                    continue
                for program, r in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    results[impl].setdefault(program, []).append(r)
        for impl, rows in results.items():
            for program, rs in rows.items():
                c = sorted(r["compile"] for r in rs)
                j = sorted(r["jax"] for r in rs)
                w = statistics.median(r["warm"] for r in rs)
                spread = f"({c[0]:.2f}-{c[-1]:.2f})" if len(c) > 1 else ""
                spread_j = f"({j[0]:.2f}-{j[-1]:.2f})" if len(j) > 1 else ""
                print(f"{name:10s} {impl:9s} {program:26s} {statistics.median(c):10.2f} {spread:>13s} "
                      f"{statistics.median(j):9.2f} {spread_j:>13s} {w:9.3f}", flush=True)


if __name__ == "__main__":
    main()
