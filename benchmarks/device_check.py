"""One table for a new machine: a Gibbs sweep sequential vs `parallel=True`, and 1/4/16 vmapped chains.

Run from the repository root:

    .venv/bin/python benchmarks/device_check.py            # the GPU workload, or a tiny one on CPU
    .venv/bin/python benchmarks/device_check.py --tiny     # the tiny workload anywhere

On a GPU it times the `secondary` workload of `bench_sweep.py` (N=10, T=10000, D=10, nlags=3,
K=50) both ways and runs `bench_chains.py` with 1, 4 and 16 chains. Without a GPU it says so
and runs the same measurements on a tiny workload, as a check that everything works. Each
measurement runs in its own process (the two benchmark scripts' own children). Compile time
and peak memory are shown for the single sweeps (`bench_chains.py` does not measure them).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


HERE = os.path.dirname(os.path.abspath(__file__))
GPU_WORKLOAD = (10, 10_000, 10, 3, 50)
TINY_WORKLOAD = (2, 500, 2, 1, 4)


def _platform() -> str:
    out = subprocess.run([sys.executable, "-c", "import jax; print(jax.devices()[0].platform)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def _sweep(workload, parallel: bool, repeats: int) -> dict:
    N, T, D, L, K = workload
    script = os.path.join(HERE, "bench_sweep.py")
    subprocess.run([sys.executable, script, "--make-data", json.dumps([N, T, D, L, K])], check=True)
    spec = dict(name="check", N=N, T=T, D=D, L=L, K=K, repeats=repeats, kappa=1e6, sequence_chunk=None,
                parallel=parallel)
    out = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench_sweep.py failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _chains(workload, chains, repeats: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "chains.json")
        subprocess.run([sys.executable, os.path.join(HERE, "bench_chains.py"), "--workload", *map(str, workload),
                        "--chains", *map(str, chains), "--repeats", str(repeats), "--json", path],
                       check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            return json.load(f)["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny workload even on a GPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    platform = _platform()
    if platform != "gpu" and platform != "cuda":
        print(f"No GPU found (JAX's default device is {platform}); running a tiny version as a check.")
    workload = TINY_WORKLOAD if args.tiny or platform not in ("gpu", "cuda") else GPU_WORKLOAD
    N, T, D, L, K = workload
    print(f"workload N={N} T={T} D={D} nlags={L} K={K} float32 on {platform}")
    rows = []
    for parallel in (False, True):
        r = _sweep(workload, parallel, args.repeats)
        rows.append((f"one sweep, {'parallel=True' if parallel else 'sequential'}", 1, r["sweep_s"],
                     r["compile_s"], r["peak_rss_gib"]))
    for r in _chains(workload, [1, 4, 16], args.repeats):
        rows.append((f"{r['C']} vmapped chains (run_chains)", r["C"], r["vmapped_s_per_sweep"], float("nan"),
                     float("nan")))
    header = f"{'measurement':<34} {'chains':>6} {'s/sweep':>9} {'s/chain-sweep':>13} {'compile s':>9} {'peak GiB':>8}"
    print(header)
    print("-" * len(header))
    for name, C, sweep, compile_s, peak in rows:
        extra = "" if compile_s != compile_s else f" {compile_s:>9.2f} {peak:>8.2f}"  # NaN: not measured
        print(f"{name:<34} {C:>6} {sweep:>9.4f} {sweep / C:>13.4f}{extra}")


if __name__ == "__main__":
    main()
