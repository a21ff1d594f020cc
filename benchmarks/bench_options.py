"""The cost of each option of the model (robust noise, per-group transitions, learned
concentrations) at one size, measured side by side in one process.

Every variant's sweep is compiled first; then the warm sweeps run round-robin (one sweep of
each variant in turn, `--repeats` rounds), so a machine whose speed drifts slows them all
alike. Printed: compile seconds, warm median wall and CPU seconds, and the ratio to the
Gaussian model's wall time. Default size: MoSeq-typical (N=20 x 36,000 frames, D=10, L=3,
K=100, float32). Run by hand from the repository root:

    .venv/bin/python benchmarks/bench_options.py
    .venv/bin/python benchmarks/bench_options.py --custom 10 10000 10 3 50 --repeats 7
"""

import argparse
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--custom", nargs=5, type=int, metavar=("N", "T", "D", "L", "K"),
                        default=[20, 36_000, 10, 3, 100])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--kappa", type=float, default=1e6)
    args = parser.parse_args()
    N, T, D, L, K = args.custom

    import jax
    import jax.random as jr
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from bench_sweep import data_path, make_data

    import arhmm_eqx as ae

    make_data(N, T, D, L, K)
    x = np.load(data_path(N, T, D, L, K))
    mask = np.ones((N, T), np.float32)
    groups = np.arange(N) % args.groups
    learn = lambda kappa: ae.ConcentrationPrior.around(5.7, 1e3, args.kappa, learn_kappa=kappa)
    variants = {
        "Gaussian": {},
        "robust (nu resampled)": {"robust": ae.RobustPrior()},
        f"{args.groups} groups": {"num_groups": args.groups},
        "learned alpha, gamma": {"concentrations": learn(False)},
        "learned alpha, gamma, kappa": {"concentrations": learn(True)},
        "all three": {"robust": ae.RobustPrior(), "num_groups": args.groups, "concentrations": learn(False)},
    }
    models, compile_s = {}, {}
    for name, options in variants.items():
        hp = ae.Hyperparams.from_scales(K, D, L, alpha=5.7, gamma=1e3, kappa=args.kappa, **options)
        labels = {"groups": groups} if "num_groups" in options else {}
        model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1), **labels)
        t0 = time.perf_counter()
        model, _ = ae.gibbs_step(jr.key(2), model, x, mask)
        jax.block_until_ready(model)
        compile_s[name] = time.perf_counter() - t0
        models[name] = model
    times = {name: [] for name in variants}
    for r in range(args.repeats):
        for name in variants:
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(ae.gibbs_step(jr.key(3 + r), models[name], x, mask))
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    med = lambda v: sorted(v)[len(v) // 2]
    base = med([w for w, _ in times["Gaussian"]])
    print(f"N={N} T={T} D={D} L={L} K={K} ({N * T:,} frames), {len(jax.devices())} CPU device(s); "
          f"warm median of {args.repeats} round-robin sweeps")
    print(f"{'variant':<30}{'first call s':>13}{'sweep s':>9}{'CPU s':>8}{'x Gaussian':>11}")
    for name in variants:
        wall = med([w for w, _ in times[name]])
        print(f"{name:<30}{compile_s[name]:>13.2f}{wall:>9.3f}{med([c for _, c in times[name]]):>8.2f}"
              f"{wall / base:>11.2f}")


if __name__ == "__main__":
    main()
