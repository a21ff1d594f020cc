"""What XLA compilations leave behind in the process: scratch memory, and memory mappings.

**Scratch memory.** Compiling a Gibbs sweep makes XLA and LLVM allocate about half a GiB of
short-lived memory. glibc's `malloc` keeps freed memory in its arenas, so without a trim that
memory stays resident for the life of the process and adds to the peak of every sweep that
follows (1.43 GiB instead of 0.96 GiB for the 720,000-frame, 100-state benchmark).
`malloc_trim(0)` after a compilation hands it back. It takes 5-50 ms, so it runs only after
compilations that took at least `TRIM_MIN_COMPILE_SECONDS` (a sweep takes seconds; the many
small programs of eager code take milliseconds and leave little behind).

The listener is process-wide (it also trims after long compilations that are not ours), so
`import arhmm_eqx` does not install it: the fit loop (`fit`, `resume`) and the command line
do, and so does a call of `release_memory_after_compile`. Once installed it is on by default;
`release_memory_after_compile(False)`, or the environment variable `ARHMM_EQX_MALLOC_TRIM=0`
read when it is installed, turns it off. On systems without glibc it does nothing.

**Memory mappings.** Every compiled XLA CPU program holds a few memory mappings (its code and
data) for as long as JAX caches it; a Gibbs sweep holds dozens. Linux caps the mappings of a
process (`vm.max_map_count`, 65,530 by default), and when a compilation cannot map its code
the process dies with a segmentation fault inside the compiler. A long session that compiles
many programs (many shapes, many test cases) can reach the cap. After each compilation the
listener counts the process's mappings (`/proc/self/maps`, about 0.3 microseconds a mapping)
and warns once past 3/4 of the cap, with the fix: `jax.clear_caches()` frees the compiled
programs and their mappings.
"""

import ctypes
import ctypes.util
import os
import warnings

import jax.monitoring


# The event JAX records after every backend compilation (`jax._src.dispatch.BACKEND_COMPILE_EVENT`).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _load_malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


# One listener is registered for the life of the process, at import (older JAX versions
# cannot unregister one); this flag says whether it trims.
_enabled = [False]
TRIM_MIN_COMPILE_SECONDS = 0.25

# Warn when the process holds more than this fraction of the kernel's cap on mappings.
MAPPINGS_WARN_FRACTION = 0.75
_MAPPINGS_MSG = (
    "this process holds {count} memory mappings, {percent:.0f}% of the kernel's cap "
    "(vm.max_map_count = {limit}). Each compiled XLA program holds some for as long as JAX "
    "caches it, and a compilation that reaches the cap crashes the process with a segmentation "
    "fault. Free compiled programs you no longer need with `jax.clear_caches()`, or raise the "
    "cap (`sysctl -w vm.max_map_count=262144`, as root)."
)
_mappings_warned = [False]


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def max_map_count() -> int | None:
    """The kernel's cap on the memory mappings of one process, or None where it is unknown."""
    return _read_int("/proc/sys/vm/max_map_count")


def map_count() -> int | None:
    """The memory mappings this process holds now, or None where it is unknown (not Linux)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return None


def check_map_count(limit: int | None = None) -> None:
    """Warn (`RuntimeWarning`, once per process) when the mappings pass 3/4 of `limit` (the kernel's cap)."""
    if _mappings_warned[0]:
        return
    limit = max_map_count() if limit is None else limit
    count = map_count() if limit else None
    if count is not None and count > MAPPINGS_WARN_FRACTION * limit:
        _mappings_warned[0] = True
        warnings.warn(_MAPPINGS_MSG.format(count=count, limit=limit, percent=100 * count / limit),
                      RuntimeWarning, stacklevel=2)


def _after_compile(event: str, duration_secs: float, **kwargs) -> None:
    if event != COMPILE_EVENT:
        return
    if _enabled[0] and _MALLOC_TRIM is not None and duration_secs >= TRIM_MIN_COMPILE_SECONDS:
        _MALLOC_TRIM(0)
    check_map_count()


def release_memory_after_compile(enable: bool = True) -> bool:
    """Switch on (the default) or off the trim of `malloc`'s free memory after each long XLA
    compilation in this process (see the module docstring).

    **Returns:** whether the trim is available here (glibc); where it is not, this does nothing.
    """
    _enabled[0] = bool(enable)
    return _MALLOC_TRIM is not None


jax.monitoring.register_event_duration_secs_listener(_after_compile)
release_memory_after_compile(os.environ.get("ARHMM_EQX_MALLOC_TRIM", "1") != "0")
