"""Benchmark many chains: C chains vmapped in one program (`run_chains`) against C sequential
`run_chain` calls, for the N=10, T=10000, D=10, nlags=3, K=50 float32 workload. A third column
runs the C chains one at a time inside one program (`run_chains(..., chain_batch_size=1)`).

Run from the repository root:

    .venv/bin/python benchmarks/bench_chains.py                    # C = 1, 4, 16
    .venv/bin/python benchmarks/bench_chains.py --chains 1 4 --sweeps 2 --repeats 3

The data are simulated as in `bench_sweep.py` (same generator, same cached file). Each timing
is warm (compiled beforehand), ended by `block_until_ready`, the median of `--repeats` runs of
`--sweeps` sweeps, and reported per sweep of all C chains together. With `--devices`, the
vmapped chains are also sharded over that many forced host devices (set before JAX starts).
"""

import argparse
import json
import os
import sys
import time


def _parse():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", nargs="*", type=int, default=[1, 4, 16])
    parser.add_argument("--workload", nargs=5, type=int, default=[10, 10_000, 10, 3, 50],
                        metavar=("N", "T", "D", "L", "K"))
    parser.add_argument("--sweeps", type=int, default=2, help="sweeps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kappa", type=float, default=1e6)
    parser.add_argument("--sequence-chunk", type=int, default=None)
    parser.add_argument("--devices", type=int, default=None, help="shard the vmapped chains over this many CPU devices")
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args()


def _median_time(fn, repeats):
    import jax

    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main():
    args = _parse()
    if args.devices:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_sweep
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import jax.tree_util as jtu
    import numpy as np

    import arhmm_eqx as ae

    N, T, D, L, K = args.workload
    bench_sweep.make_data(N, T, D, L, K)
    x = jnp.asarray(np.load(bench_sweep.data_path(N, T, D, L, K)))
    mask = jnp.ones((N, T), jnp.float32)
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=args.kappa)
    n = args.sweeps
    print(f"N={N} T={T} D={D} L={L} K={K} float32, {jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"{os.cpu_count()} CPU cores; per sweep of all C chains, median of {args.repeats} runs of {n} sweeps")
    header = (f"{'C':>3} {'vmapped s/sweep':>16} {'sequential s/sweep':>19} {'speed-up':>9} "
              f"{'batch=1 s/sweep':>16} {'est. GiB':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for C in args.chains:
        models = ae.init_chains(hp, x, mask, key=jr.key(1), num_chains=C)
        mesh = ae.chain_mesh() if args.devices else None
        vmapped = _median_time(
            lambda: ae.run_chains(jr.key(2), models, x, mask, n, sequence_chunk=args.sequence_chunk, mesh=mesh),
            args.repeats,
        ) / n
        one_at_a_time = _median_time(
            lambda: ae.run_chains(jr.key(2), models, x, mask, n, sequence_chunk=args.sequence_chunk,
                                  chain_batch_size=1),
            args.repeats,
        ) / n if not args.devices else float("nan")
        singles = [jtu.tree_map(lambda v: v[c], models) for c in range(C)]
        keys = jr.split(jr.key(2), C)
        sequential = _median_time(
            lambda: [ae.run_chain(keys[c], singles[c], x, mask, n, throw=False, sequence_chunk=args.sequence_chunk)
                     for c in range(C)],
            args.repeats,
        ) / n
        est = ae.estimate_memory(N, T, D, L, K, num_chains=C, sequence_chunk=args.sequence_chunk).total / 2**30
        rows.append({"C": C, "vmapped_s_per_sweep": vmapped, "sequential_s_per_sweep": sequential,
                     "batch1_s_per_sweep": one_at_a_time, "estimate_gib": est})
        print(f"{C:>3} {vmapped:>16.3f} {sequential:>19.3f} {sequential / vmapped:>8.2f}x {one_at_a_time:>16.3f} "
              f"{est:>9.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workload": args.workload, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
