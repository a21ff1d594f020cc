"""Benchmark one Gibbs sweep: compile time, warm sweep time (median) and peak memory.

Each workload runs in its own process, so the peak resident memory reported is that
workload's alone; its data are simulated beforehand by another process and loaded from
a file in the temporary directory, as a user's recordings would be. Run from the repository root:

    .venv/bin/python benchmarks/bench_sweep.py                   # the standard table
    .venv/bin/python benchmarks/bench_sweep.py --only moseq      # one workload
    .venv/bin/python benchmarks/bench_sweep.py --custom 4 10000 10 3 50
    .venv/bin/python benchmarks/bench_sweep.py --only moseq --groups 4   # per-group transitions
    .venv/bin/python benchmarks/bench_sweep.py --only moseq --learn-concentrations   # alpha, gamma learned
    .venv/bin/python benchmarks/bench_sweep.py --only moseq --learn-kappa            # kappa too
    .venv/bin/python benchmarks/bench_sweep.py --only moseq --robust    # Student-t noise (nu resampled)

Columns: workload, N, T, D, L, K, frames, compile (s, first call minus a warm call),
sweep (s, median of --repeats warm sweeps, each ended by block_until_ready), peak RSS
(GiB, whole process), and ms per 1k frames.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


WORKLOADS = {
    # name: (N, T, D, L, K)
    "moseq": (20, 36_000, 10, 3, 100),
    "secondary": (10, 10_000, 10, 3, 50),
    "T=1e4": (1, 10_000, 10, 3, 100),
    "T=1e5": (10, 10_000, 10, 3, 100),
    "T=1e6": (25, 40_000, 10, 3, 100),
    "K=25": (10, 10_000, 10, 3, 25),
    "K=100": (10, 10_000, 10, 3, 100),
    "K=400": (10, 10_000, 10, 3, 400),
}
DEFAULT = ["moseq", "secondary", "T=1e4", "T=1e5", "T=1e6", "K=25", "K=100", "K=400"]


def simulate(N, T, D, L, K, key):
    """Data from a random stable `K`-state AR-HMM with sticky transitions (float32)."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    from arhmm_eqx._generate import simulate_dataset

    k1, k2, k3 = jr.split(key, 3)
    # Contracting dynamics on the most recent lag: 0.95 times a small random rotation
    # (spectral radius 0.95, so trajectories stay bounded); one bias per state.
    G = 0.1 * jr.normal(k1, (K, D, D))
    A_last = 0.95 * jax.vmap(jax.scipy.linalg.expm)(G - jnp.swapaxes(G, -1, -2))
    Ab = jnp.concatenate(
        [jnp.zeros((K, D, D * (L - 1))), A_last, 0.3 * jr.normal(k2, (K, D, 1))], axis=-1
    )
    Q = jnp.broadcast_to(0.01 * jnp.eye(D), (K, D, D))
    stay = 1 - 1 / 20
    pi = jnp.full((K, K), (1 - stay) / (K - 1)) + (stay - (1 - stay) / (K - 1)) * jnp.eye(K)
    _, x = simulate_dataset(k3, pi, Ab, Q, N, T)
    return x


def data_path(N, T, D, L, K) -> str:
    return os.path.join(tempfile.gettempdir(), f"arhmm_eqx_bench_{N}_{T}_{D}_{L}_{K}.npy")


def make_data(N, T, D, L, K):
    """Simulate once, in its own process, and save: the timed process loads the data as a
    user's would, so its peak memory holds no simulation."""
    import jax.random as jr
    import numpy as np

    path = data_path(N, T, D, L, K)
    if not os.path.exists(path):
        np.save(path + ".tmp.npy", np.asarray(simulate(N, T, D, L, K, jr.key(0))))
        os.replace(path + ".tmp.npy", path)


def run_one(name, N, T, D, L, K, repeats, kappa, sequence_chunk=None, parallel=False, groups=None, learn=None,
            robust=False):
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    import arhmm_eqx as ae

    x = jnp.asarray(np.load(data_path(N, T, D, L, K)))
    mask = jnp.ones((N, T), jnp.float32)
    # options only when used, so that the script runs on earlier versions too
    options = {}
    if learn is not None:  # learned concentrations: the sweep also updates alpha, gamma (kappa)
        options["concentrations"] = ae.ConcentrationPrior.around(5.7, 1e3, kappa, learn_kappa=learn == "kappa")
    if groups is not None:
        options["num_groups"] = groups
    if robust:
        options["robust"] = ae.RobustPrior()
    hp = ae.Hyperparams.from_scales(K, D, L, alpha=5.7, gamma=1e3, kappa=kappa, **options)
    # with groups, sequences are dealt to the groups in turn
    labels = {} if groups is None else {"groups": np.arange(N) % groups}
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1), **labels)
    jax.block_until_ready(model)
    t0 = time.perf_counter()
    model, _ = ae.gibbs_step(jr.key(2), model, x, mask, sequence_chunk=sequence_chunk, parallel=parallel)
    jax.block_until_ready(model)
    first = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        model, info = ae.gibbs_step(jr.key(3 + i), model, x, mask, sequence_chunk=sequence_chunk, parallel=parallel)
        jax.block_until_ready(model)
        times.append(time.perf_counter() - t0)
    times.sort()
    sweep = times[len(times) // 2]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "workload": name, "N": N, "T": T, "D": D, "L": L, "K": K, "frames": N * T,
        "compile_s": first - sweep, "sweep_s": sweep, "peak_rss_gib": peak_gib,
        "ms_per_1k_frames": 1e3 * sweep / (N * T / 1e3), "device": jax.devices()[0].platform,
        "estimate_gib": ae.estimate_memory(N, T, D, L, K, sequence_chunk=sequence_chunk).total / 2**30,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="workloads to run")
    parser.add_argument("--custom", nargs=5, type=int, metavar=("N", "T", "D", "L", "K"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kappa", type=float, default=1e6)
    parser.add_argument("--sequence-chunk", type=int, default=None, help="the memory knob of gibbs_step")
    parser.add_argument("--parallel", action="store_true", help="parallel-in-time filter and sampler")
    parser.add_argument("--groups", type=int, default=None,
                        help="per-group transition matrices with this many groups (sequences dealt in turn)")
    parser.add_argument("--learn-concentrations", action="store_true", help="the sweep learns alpha and gamma")
    parser.add_argument("--learn-kappa", action="store_true", help="the sweep learns alpha, gamma and kappa")
    parser.add_argument("--robust", action="store_true", help="robust (Student-t) noise, nu resampled")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--make-data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_data:
        make_data(*json.loads(args.make_data))
        return
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(run_one(**spec)))
        return
    todo = [(n, WORKLOADS[n]) for n in (args.only or DEFAULT)]
    if args.custom:
        todo = [("custom", tuple(args.custom))]
    header = f"{'workload':<10} {'N':>3} {'T':>6} {'D':>3} {'L':>2} {'K':>4} {'frames':>8} " \
             f"{'compile s':>9} {'sweep s':>8} {'peak GiB':>8} {'est. GiB':>8} {'ms/1k fr':>8}"
    print(header)
    print("-" * len(header))
    for name, (N, T, D, L, K) in todo:
        spec = dict(name=name, N=N, T=T, D=D, L=L, K=K, repeats=args.repeats, kappa=args.kappa,
                    sequence_chunk=args.sequence_chunk, parallel=args.parallel, groups=args.groups,
                    learn="kappa" if args.learn_kappa else ("alpha_gamma" if args.learn_concentrations else None),
                    robust=args.robust)
        subprocess.run([sys.executable, __file__, "--make-data", json.dumps([N, T, D, L, K])], check=True)
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                             text=True, env=os.environ)
        if out.returncode != 0:
            print(f"{name:<10} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<10} {N:>3} {T:>6} {D:>3} {L:>2} {K:>4} {r['frames']:>8} {r['compile_s']:>9.2f} "
              f"{r['sweep_s']:>8.3f} {r['peak_rss_gib']:>8.2f} {r['estimate_gib']:>8.2f} "
              f"{r['ms_per_1k_frames']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
