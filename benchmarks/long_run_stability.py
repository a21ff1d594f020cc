"""Long-run numerical stability of the Gibbs sampler in float32 (a script, run by hand).

A realistic problem (K = 100 states fitted to N x T frames of D = 10 dimensions with
nlags = 3, simulated from a sticky AR-HMM with fewer states) is sampled for 1000 sweeps at
several stickiness values. The chain runs with `run_chain` in chunks (`start_iter`, so the
chunks are one chain), and after every chunk the script records the worst numerical margins:

- `nonfinite`: number of NaN/inf values anywhere in the model or the chunk's `GibbsInfo`
  (and `bad_sweeps`, the sweeps of the chunk with `GibbsInfo.ok` False);
- `min_eig_Q`: the smallest eigenvalue of any `Q[k]` (float64 eigenvalues of the float32 `Q`);
- `min_cond_Q`: the smallest `min-eig / max-eig` over states (1 / condition number);
- `chol_fail`: states whose `Q` fails a float32 Cholesky factorisation (what the sampler uses);
- `max_rowsum_err`: `max |sum_j pi[i, j] - 1|` (the float32 entries summed exactly in float64);
- `min_pi`, `min_beta`: the smallest entries of `pi` and `betas`;
- `used`: states holding at least one frame; `log_joint_x`: the last sweep's `log p(x | z, params)`.

Run from the repository root:

    .venv/bin/python benchmarks/long_run_stability.py
    .venv/bin/python benchmarks/long_run_stability.py --kappas 1e4 --sweeps 200 --T 2000

`EQX_ON_ERROR` need not be set: the chains run with `throw=False`, so a non-finite sweep is
recorded, not raised.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import arhmm_eqx as ae


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sweep import simulate  # noqa: E402


COLUMNS = [
    ("sweep", "{:>6d}"), ("nonfinite", "{:>9d}"), ("bad_sweeps", "{:>10d}"), ("min_eig_Q", "{:>10.3e}"),
    ("min_cond_Q", "{:>10.3e}"), ("chol_fail", "{:>9d}"), ("max_rowsum_err", "{:>14.3e}"), ("min_pi", "{:>10.3e}"),
    ("min_beta", "{:>10.3e}"), ("used", "{:>5d}"), ("log_joint_x", "{:>12.5e}"),
]


def margins(model: ae.ARHMM, info: ae.GibbsInfo, mask) -> dict:
    """The numerical margins of one model (and the `GibbsInfo` of the chunk that produced it)."""
    nonfinite = sum(
        int(np.sum(~np.isfinite(np.asarray(leaf))))
        for leaf in jax.tree_util.tree_leaves((model.params, info.log_joint_x, info.log_joint_z))
    )
    Q = np.asarray(model.params.Q)
    pi = np.asarray(model.params.pi)
    betas = np.asarray(model.params.betas)
    chol = np.asarray(jnp.linalg.cholesky(model.params.Q))  # float32, as the sampler factorises Q
    if np.all(np.isfinite(Q)):
        eig = np.linalg.eigvalsh(Q.astype(np.float64))  # (K, D), ascending
        min_eig = float(eig[:, 0].min())
        min_cond = float((eig[:, 0] / eig[:, -1]).min())
    else:
        min_eig = min_cond = float("nan")
    L = model.hyperparams.nlags
    z = np.asarray(model.states.z)
    valid = np.asarray(mask)[:, L:] > 0
    return {
        "nonfinite": nonfinite,
        "bad_sweeps": int(np.sum(~np.asarray(info.ok))),
        "min_eig_Q": min_eig,
        "min_cond_Q": min_cond,
        "chol_fail": int(np.sum(~np.all(np.isfinite(chol), axis=(-1, -2)))),
        "max_rowsum_err": float(np.abs(pi.astype(np.float64).sum(-1) - 1.0).max()),
        "min_pi": float(pi.min()),
        "min_beta": float(betas.min()),
        "used": int(np.unique(z[valid]).size),
        "log_joint_x": float(np.asarray(info.log_joint_x)[-1]),
    }


def run_kappa(kappa, x, mask, args) -> tuple[list[dict], float]:
    hp = ae.Hyperparams.from_scales(args.K, args.D, args.L, kappa=kappa)
    key_init, key_chain = jr.split(jr.fold_in(jr.key(args.seed), int(np.log10(kappa) * 100)))
    t0 = time.perf_counter()
    model = ae.ARHMM.from_prior(hp, x, mask, key=key_init)
    rows = []
    for start in range(0, args.sweeps, args.chunk):
        n = min(args.chunk, args.sweeps - start)
        model, info = ae.run_chain(key_chain, model, x, mask, n, start_iter=start, throw=False)
        jax.block_until_ready(model)
        rows.append({"sweep": start + n, **margins(model, info, mask)})
        print(f"  kappa={kappa:.0e} sweep {start + n}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return rows, time.perf_counter() - t0


def print_table(kappa, rows, wall):
    print(f"\nkappa = {kappa:.0e}   (wall time {wall:.1f} s, {len(rows)} chunks)")
    print(" ".join(f"{name:>{len(fmt.format(0) if 'd' in fmt else fmt.format(0.0))}}" for name, fmt in COLUMNS))
    for r in rows:
        print(" ".join(fmt.format(r[name]) for name, fmt in COLUMNS))
    worst = {
        "nonfinite": max(r["nonfinite"] for r in rows), "bad_sweeps": sum(r["bad_sweeps"] for r in rows),
        "min_eig_Q": min(r["min_eig_Q"] for r in rows), "min_cond_Q": min(r["min_cond_Q"] for r in rows),
        "chol_fail": max(r["chol_fail"] for r in rows), "max_rowsum_err": max(r["max_rowsum_err"] for r in rows),
        "min_pi": min(r["min_pi"] for r in rows), "min_beta": min(r["min_beta"] for r in rows),
    }
    print("worst: " + ", ".join(f"{k}={v:.3e}" if isinstance(v, float) else f"{k}={v}" for k, v in worst.items()))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kappas", nargs="*", type=float, default=[1e2, 1e4, 1e6, 1e8])
    parser.add_argument("--sweeps", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--N", type=int, default=4)
    parser.add_argument("--T", type=int, default=10_000)
    parser.add_argument("--D", type=int, default=10)
    parser.add_argument("--L", type=int, default=3)
    parser.add_argument("--K", type=int, default=100, help="states of the fitted model")
    parser.add_argument("--true-states", type=int, default=30, help="states of the simulating model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x = simulate(args.N, args.T, args.D, args.L, args.true_states, jr.key(args.seed)).astype(jnp.float32)
    mask = jnp.ones((args.N, args.T), jnp.float32)
    print(f"float32, N={args.N}, T={args.T}, D={args.D}, nlags={args.L}, K={args.K} "
          f"(data from {args.true_states} states), {args.sweeps} sweeps in chunks of {args.chunk}, "
          f"device {jax.devices()[0].platform}")
    summary = {}
    for kappa in args.kappas:
        rows, wall = run_kappa(kappa, x, mask, args)
        summary[kappa] = (print_table(kappa, rows, wall), wall)
    print("\nsummary (worst over all chunks)")
    names = ["nonfinite", "bad_sweeps", "min_eig_Q", "min_cond_Q", "chol_fail", "max_rowsum_err", "min_pi", "min_beta"]
    print(f"{'kappa':>7} " + " ".join(f"{n:>14}" for n in names) + f" {'wall s':>8}")
    for kappa, (worst, wall) in summary.items():
        cells = [f"{worst[n]:>14d}" if isinstance(worst[n], int) else f"{worst[n]:>14.3e}" for n in names]
        print(f"{kappa:>7.0e} " + " ".join(cells) + f" {wall:>8.1f}")


if __name__ == "__main__":
    main()
