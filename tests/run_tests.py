"""Run every test file in its own pytest process, two at a time; exit non-zero if any fails.

This is the suite's command (README, CI): two files run at once on a two-core machine, and
each process's compiled programs end with its file. (`conftest.py` also frees JAX's compiled
programs after every module: a single process running the whole suite once reached the
kernel's cap on memory mappings, which compiled programs hold, and crashed in a compilation.)
Extra arguments go to every pytest call, e.g. `python tests/run_tests.py -x -k geweke`.
"""

import concurrent.futures
import pathlib
import subprocess
import sys
import time


def _run(path: pathlib.Path, args: list[str]) -> tuple[str, int, str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path), *args],
                          capture_output=True, text=True)
    return path.name, done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def main() -> int:
    files = sorted(pathlib.Path(__file__).parent.glob("test_*.py"))
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for name, code, output, seconds in pool.map(lambda p: _run(p, sys.argv[1:]), files):
            last = output.strip().splitlines()[-1] if output.strip() else ""
            print(f"{name:32s} {seconds:7.1f} s  {last}", flush=True)
            if code not in (0, 5):  # 5: no test selected
                failed.append(name)
                print(output[-6000:], flush=True)
    print(f"{len(files) - len(failed)} of {len(files)} files passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
