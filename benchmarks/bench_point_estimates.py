"""Compare the point estimates with Gibbs sampling: wall time and final marginal log-likelihood.

On data simulated from a random sticky 50-state AR-HMM (the "secondary" workload of
`bench_sweep.py`: N=10 sequences of T=10000 frames, D=10, nlags=3, float32), fit a K=50
model from one prior draw with

- `fit_em` (MAP-EM, up to `--em-iters` iterations, `--tol` per frame),
- `fit_gradient` with `optax.adam` (`--adam-steps` full-batch steps, cosine-decayed step size),
- `run_chain` (`--gibbs-sweeps` Gibbs sweeps; the last sample is scored),

next to the true parameters; then EM started from the last Gibbs sample, and Adam
(`--refine-steps`, step 1e-3) started from the EM fit, to show that the fits seed each other.

For each: the compile time (ahead-of-time `lower().compile()` of the jitted function), the
run time of the compiled call, their sum, the final marginal log-likelihood (computed with
the log-space filter of `_inference/logspace.py`, which stays finite for the initial prior draw)
and the log posterior. Run from the repository root:

    .venv/bin/python benchmarks/bench_point_estimates.py
    .venv/bin/python benchmarks/bench_point_estimates.py --em-iters 20 --adam-steps 50 --gibbs-sweeps 20
"""

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _timed(jitted, *args):
    """(compile seconds, run seconds, output) of an `eqx.filter_jit` function on `args`."""
    import jax

    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return t1 - t0, time.perf_counter() - t1, out


def true_model(N, T, D, L, K, kappa):
    """The parameters `bench_sweep.simulate` draws its data from (same keys), as an `ARHMM`."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import arhmm_eqx as ae

    k1, k2, _ = jr.split(jr.key(0), 3)
    G = 0.1 * jr.normal(k1, (K, D, D))
    A_last = 0.95 * jax.vmap(jax.scipy.linalg.expm)(G - jnp.swapaxes(G, -1, -2))
    Ab = jnp.concatenate([jnp.zeros((K, D, D * (L - 1))), A_last, 0.3 * jr.normal(k2, (K, D, 1))], axis=-1)
    Q = jnp.broadcast_to(0.01 * jnp.eye(D), (K, D, D))
    stay = 1 - 1 / 20
    pi = jnp.full((K, K), (1 - stay) / (K - 1)) + (stay - (1 - stay) / (K - 1)) * jnp.eye(K)
    hp = ae.Hyperparams.from_scales(K, D, L, alpha=5.7, gamma=1e3, kappa=kappa)
    params = ae.Params(Ab=Ab, Q=Q, pi=pi, betas=jnp.full((K,), 1.0 / K))
    return ae.ARHMM(hp, params, ae.States(z=jnp.zeros((N, T - L), jnp.int32)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", nargs=5, type=int, default=[10, 10_000, 10, 3, 50],
                        metavar=("N", "T", "D", "L", "K"))
    parser.add_argument("--kappa", type=float, default=1e4)
    parser.add_argument("--em-iters", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--adam-steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--gibbs-sweeps", type=int, default=200)
    parser.add_argument("--refine-steps", type=int, default=50)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np
    import optax
    from bench_sweep import simulate

    import arhmm_eqx as ae
    from arhmm_eqx import _em, _gradient, _run
    from arhmm_eqx._gibbs import SweepOptions
    from arhmm_eqx._inference import stable_marginal_log_likelihood

    stable_mll = jax.jit(stable_marginal_log_likelihood)
    N, T, D, L, K = args.workload
    x = simulate(N, T, D, L, K, jr.key(0))
    mask = jnp.ones((N, T), jnp.float32)
    hp = ae.Hyperparams.from_scales(K, D, L, alpha=5.7, gamma=1e3, kappa=args.kappa)
    start = jax.block_until_ready(ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1)))
    frames = N * (T - L)
    truth = true_model(N, T, D, L, K, args.kappa)
    rows = [("true params", 0.0, 0.0, truth, "the parameters the data were simulated from"),
            ("initial model", 0.0, 0.0, start, "one prior draw; every method starts here")]

    c, r, (em, info) = _timed(_em._fit_em, start, x, mask, jnp.asarray(args.tol), args.em_iters)
    rows.append(("EM", c, r, em, f"{int(info.num_iters)} iterations, converged={bool(info.converged)}"))

    schedule = optax.cosine_decay_schedule(args.lr, args.adam_steps, alpha=0.05)
    c, r, (adam, losses) = _timed(_gradient._fit_gradient, start, x, mask, optax.adam(schedule), None,
                                  args.adam_steps, None)
    rows.append(("Adam", c, r, adam, f"{args.adam_steps} steps, lr {args.lr} cosine-decayed"))

    start_iter = jnp.asarray(0, jnp.int32)
    c, r, (gibbs, ginfo) = _timed(_run.scan_chain_compiled, jr.key(2), start, x, mask, start_iter,
                                  args.gibbs_sweeps, SweepOptions())
    rows.append(("Gibbs", c, r, gibbs, f"{args.gibbs_sweeps} sweeps, last sample"))

    # Composition: each fit is an ARHMM that seeds the others.
    c, r, (em2, info2) = _timed(_em._fit_em, gibbs, x, mask, jnp.asarray(args.tol), args.em_iters)
    rows.append(("Gibbs -> EM", c, r, em2, f"{int(info2.num_iters)} iterations, converged={bool(info2.converged)}"))
    c, r, (adam2, _) = _timed(_gradient._fit_gradient, em, x, mask, optax.adam(1e-3), None, args.refine_steps, None)
    rows.append(("EM -> Adam", c, r, adam2, f"{args.refine_steps} steps, lr 1e-3, from the EM fit"))

    print(f"workload N={N} T={T} D={D} L={L} K={K} ({frames} frames), kappa={args.kappa:g}, "
          f"device={jax.devices()[0].platform}, dtype={x.dtype}")
    header = f"{'method':<14} {'compile s':>9} {'run s':>8} {'total s':>8} {'marg. LL':>12} {'LL/frame':>9} " \
             f"{'log post.':>12}  notes"
    print(header)
    print("-" * len(header))
    for name, c, r, model, notes in rows:
        p = model.params
        mll = float(stable_mll(x, mask, p.Ab, p.Q, p.pi))
        lp = float(model.log_posterior(x, mask))
        print(f"{name:<14} {c:>9.1f} {r:>8.1f} {c + r:>8.1f} {mll:>12.1f} {mll / frames:>9.4f} {lp:>12.1f}  {notes}")
    trace = np.asarray(info.log_posterior)
    print("EM log posterior every 10 iterations:", np.round(trace[: int(info.num_iters) + 1 : 10], 1).tolist())
    print("Adam loss every 10%:", np.round(np.asarray(losses)[:: max(1, args.adam_steps // 10)], 4).tolist())


if __name__ == "__main__":
    main()
