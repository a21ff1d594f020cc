"""Run every test file in its own pytest process, two at a time; exit non-zero if any fails.

This is the suite's command (README, CI): two files run at once on a two-core machine, and
each process's compiled programs end with its file. (`conftest.py` also frees JAX's compiled
programs after every module: a single process running the whole suite once reached the
kernel's cap on memory mappings, which compiled programs hold, and crashed in a compilation.)

The files share one JAX persistent compilation cache, a temporary folder made for the run
(`ARHMM_EQX_TEST_JAX_CACHE`, which `conftest.py` hands to JAX): a sweep that one file
compiled is loaded, not compiled again, by the next file with the same shapes. The files
that test the compilation cache and compile events themselves run without it. Files that
do not run long chains compile with XLA's optimisations mostly off (see `_RUNTIME_BOUND`).

The longest files start first (their last measured times are in `durations.json`; a file not
listed there counts as a long one), so that no long file starts last and the two workers
finish together. `--record` writes this run's times into `durations.json`. Other arguments
go to every pytest call, e.g. `python tests/run_tests.py -x -k geweke`.
"""

import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time


HERE = pathlib.Path(__file__).parent
DURATIONS = HERE / "durations.json"
# these assert on compilations and on JAX's cache configuration: no shared cache for them
_OWN_COMPILATIONS = ("test_compile_cache.py", "test_compiler_memory.py")
# Most files spend their time compiling small programs that then run for milliseconds: they
# compile with XLA's optimisations mostly off (`JAX_DISABLE_MOST_OPTIMIZATIONS`), which cuts
# the compile time by half or more. Even the joint-distribution files gain: their chains run
# about 1.2x slower unoptimised, but compile in half the time. These files run long chains
# of larger programs, where optimised code pays (each measured both ways), or measure what
# the optimised programs use (memory, numerical stability in float32).
_RUNTIME_BOUND = (
    "test_compiler_memory.py", "test_memory.py", "test_sbc.py", "test_stability.py", "test_table_counts.py",
)

# Two files already run at once on the two cores, so the other files keep one CPU device each
# (`ARHMM_EQX_CPU_DEVICES=1`) rather than splitting their larger calls over one per core;
# this file tests that split.
_SPLITS_OVER_CORES = ("test_cores.py",)


def _run(path: pathlib.Path, args: list[str], cache: str) -> tuple[str, int, str, float]:
    env = dict(os.environ)
    if path.name not in _OWN_COMPILATIONS:
        env["ARHMM_EQX_TEST_JAX_CACHE"] = cache
    if path.name not in _RUNTIME_BOUND:
        env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    if path.name not in _SPLITS_OVER_CORES:
        env.setdefault("ARHMM_EQX_CPU_DEVICES", "1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path), *args],
                          capture_output=True, text=True, env=env)
    return path.name, done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def main() -> int:
    args = sys.argv[1:]
    record = "--record" in args
    args = [a for a in args if a != "--record"]
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    unknown = max(known.values(), default=0.0)
    files = sorted(HERE.glob("test_*.py"), key=lambda p: (-known.get(p.name, unknown), p.name))
    failed, seconds_of = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="arhmm-eqx-test-cache-") as cache, \
            concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for name, code, output, seconds in pool.map(lambda p: _run(p, args, cache), files):
            seconds_of[name] = round(seconds, 1)
            last = output.strip().splitlines()[-1] if output.strip() else ""
            print(f"{name:32s} {seconds:7.1f} s  {last}", flush=True)
            if code not in (0, 5):  # 5: no test selected
                failed.append(name)
                print(output[-6000:], flush=True)
    print(f"{len(files) - len(failed)} of {len(files)} files passed in {time.perf_counter() - start:.0f} s"
          + (f"; failed: {failed}" if failed else ""))
    if record:
        DURATIONS.write_text(json.dumps(dict(sorted(seconds_of.items())), indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
