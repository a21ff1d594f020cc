"""Where a sweep's time goes, the arithmetic floor, and how the entry points scale with CPU devices.

For one workload (default MoSeq-typical: N=20 sequences x 36,000 frames, D=10, L=3, K=100,
float32) it prints, from one process per CPU-device count:

- per part of the sweep, each compiled alone (warm median wall and CPU seconds): transitions
  (counts, table counts, betas, pi), AR parameters (statistics and the MNIW draw), the forward
  filter (emission likelihoods fused in, messages kept), the state step (filter + backward
  sampling; backward = state step - filter), the whole sweep (`gibbs_step`), and beside them
  `marginal_log_likelihood` and `most_likely_states` (Viterbi);
- the arithmetic floor: the flops of the AR log-likelihood product (`2 NT (DL+1) KD`), the
  filter's products (`2 NT K^2`) and the AR statistics (`2 NT (DL+1+D)^2`) at this process's
  own matrix-product rate (a 2048 x 2048 float32 product, all cores).

The entry points split their sequences over CPU devices (`ARHMM_EQX_CPU_DEVICES`, one per core
by default); the parts are single-device kernels. Run by hand from the repository root:

    .venv/bin/python benchmarks/bench_parts.py                      # 1 device, then one per core
    .venv/bin/python benchmarks/bench_parts.py --devices 1 2 4      # forced device counts
    .venv/bin/python benchmarks/bench_parts.py --custom 10 10000 10 3 50
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _time(fn, repeats):
    import jax

    jax.block_until_ready(fn())  # compile
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    walls.sort()
    cpus.sort()
    return walls[len(walls) // 2], cpus[len(cpus) // 2]


def _gemm_rate():
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    wall, _ = _time(lambda: f(a), 5)
    return 2 * 2048**3 / wall


def child(N, T, D, L, K, repeats):
    import equinox as eqx
    import jax
    import jax.random as jr
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from bench_sweep import data_path, make_data

    import arhmm_eqx as ae
    from arhmm_eqx._ar import resample_ar_params
    from arhmm_eqx._inference import sample_stateseqs
    from arhmm_eqx._inference.blocked import forward_filter_blocks
    from arhmm_eqx._transitions import resample_hdp_transitions

    make_data(N, T, D, L, K)
    x = np.load(data_path(N, T, D, L, K))
    mask = np.ones((N, T), np.float32)
    hp = ae.Hyperparams.from_scales(K, D, L, alpha=5.7, gamma=1e3, kappa=1e6)
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1))
    model, _ = ae.gibbs_step(jr.key(2), model, x, mask)  # states and parameters of a sweep
    p, z = model.params, model.states.z
    xj, mj = jax.device_put(x, jax.devices()[0]), jax.device_put(mask, jax.devices()[0])
    key = jr.key(3)
    transitions = eqx.filter_jit(lambda: resample_hdp_transitions(
        key, z, mj, p.betas, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K, nlags=L))
    ar = eqx.filter_jit(lambda: resample_ar_params(
        key, xj, mj, z, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0, num_states=K, nlags=L))
    filt = eqx.filter_jit(lambda: forward_filter_blocks(xj, mj, p.Ab, p.Q, p.pi))
    states = eqx.filter_jit(lambda: sample_stateseqs(key, xj, mj, p.Ab, p.Q, p.pi))
    rows = {
        "transitions": _time(transitions, repeats),
        "AR parameters": _time(ar, repeats),
        "filter": _time(filt, repeats),
        "state step": _time(states, repeats),
        "sweep (gibbs_step)": _time(lambda: ae.gibbs_step(key, model, x, mask), repeats),
        "marginal_log_likelihood": _time(lambda: model.marginal_log_likelihood(x, mask), repeats),
        "most_likely_states": _time(lambda: model.most_likely_states(x, mask), repeats),
    }
    A = D * L + 1
    flops = 2 * N * (T - L) * (A * K * D + K * K + (A + D) ** 2)
    return {"devices": len(jax.devices()), "rows": rows, "floor_s": flops / _gemm_rate(), "gflops": flops / 1e9}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--custom", nargs=5, type=int, metavar=("N", "T", "D", "L", "K"),
                        default=[20, 36_000, 10, 3, 100])
    parser.add_argument("--devices", nargs="*", default=["1", "auto"], help="CPU device counts, one process each")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child), args.repeats)))
        return
    N, T, D, L, K = args.custom
    results = []
    for devices in args.devices:
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
        env["ARHMM_EQX_CPU_DEVICES"] = devices
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps([N, T, D, L, K]),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"devices={devices} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if not results:
        return
    print(f"N={N} T={T} D={D} L={L} K={K}: {N * T:,} frames; warm median of {args.repeats}, wall s (CPU s)")
    print(f"{'part':<26}" + "".join(f"{str(r['devices']) + ' CPU device(s)':>22}" for r in results))
    for name in results[0]["rows"]:
        print(f"{name:<26}" + "".join(f"{r['rows'][name][0]:>12.3f} ({r['rows'][name][1]:>6.2f})" for r in results))
    back = [r["rows"]["state step"][0] - r["rows"]["filter"][0] for r in results]
    print(f"{'backward (step - filter)':<26}" + "".join(f"{b:>12.3f}{'':>9}" for b in back))
    for r in results:
        sweep = r["rows"]["sweep (gibbs_step)"][0]
        print(f"{r['devices']} device(s): floor {r['floor_s']:.3f} s ({r['gflops']:.1f} GFLOP at this process's "
              f"product rate); sweep / floor = {sweep / r['floor_s']:.1f}; Viterbi / marginal likelihood = "
              f"{r['rows']['most_likely_states'][0] / r['rows']['marginal_log_likelihood'][0]:.2f}")


if __name__ == "__main__":
    main()
