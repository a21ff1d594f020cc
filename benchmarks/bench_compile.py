"""Compile time of each public program, and warm time of the decoding programs.

Each workload runs in a fresh process with JAX's persistent compilation cache off, so every
first call compiles. Compile time is the first call minus the median of warm calls (the
program's run time), as `bench_sweep.py` measures it. Run from the repository root:

    .venv/bin/python benchmarks/bench_compile.py                  # moseq and secondary
    .venv/bin/python benchmarks/bench_compile.py --only secondary
    .venv/bin/python benchmarks/bench_compile.py --custom 4 2000 5 2 20

Programs: `from_prior`, one Gibbs sweep (`resample`), a 10-sweep `run_chain`,
`marginal_log_likelihood`, `stateseq_marginals` and `most_likely_states` (Viterbi). Columns:
compile (s) and warm (s, median of --repeats calls). Timings are machine- and load-dependent:
compare rows of one run, not runs on different machines.
"""

import argparse
import json
import os
import subprocess
import sys
import time


WORKLOADS = {
    # name: (N, T, D, L, K)
    "moseq": (20, 36_000, 10, 3, 100),
    "secondary": (10, 10_000, 10, 3, 50),
}


def child(N, T, D, L, K, repeats):
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    import arhmm_eqx as ae

    rng = np.random.default_rng(0)
    x = jnp.asarray(np.cumsum(0.1 * rng.normal(size=(N, T, D)), axis=1), jnp.float32)
    mask = jnp.ones((N, T), jnp.float32)
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
    rows = {}
    for name, call in programs.items():
        start = time.perf_counter()
        jax.block_until_ready(call(1))
        first = time.perf_counter() - start
        warm = []
        for i in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(call(2 + i))
            warm.append(time.perf_counter() - start)
        warm = float(np.median(warm))
        rows[name] = {"compile": first - warm, "warm": warm}
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
    parser.add_argument("--child", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.repeats)
    workloads = {"custom": tuple(args.custom)} if args.custom else (
        {args.only: WORKLOADS[args.only]} if args.only else WORKLOADS)
    env = dict(os.environ, ARHMM_EQX_COMPILE_CACHE="0")
    print(f"{'workload':10s} {'program':26s} {'compile s':>10s} {'warm s':>9s}")
    for name, sizes in workloads.items():
        out = subprocess.run([sys.executable, __file__, "--child", *map(str, sizes), "--repeats", str(args.repeats)],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-3000:]}")
            continue
        rows = json.loads(out.stdout.strip().splitlines()[-1])
        for program, r in rows.items():
            print(f"{name:10s} {program:26s} {r['compile']:10.2f} {r['warm']:9.3f}", flush=True)


if __name__ == "__main__":
    main()
