"""Return the compiler's scratch memory to the operating system after each XLA compilation.

Compiling a Gibbs sweep makes XLA and LLVM allocate about half a GiB of short-lived
memory. glibc's `malloc` keeps freed memory in its arenas, so without a trim that memory
stays resident for the life of the process and adds to the peak of every sweep that
follows (it was 1.40 GiB instead of 0.96 GiB for the 720,000-frame, 100-state
benchmark). `malloc_trim(0)` after each compilation hands it back; it costs milliseconds,
against seconds for the compilation itself.

It is off by default, and opt-in: `release_memory_after_compile(True)`, or the environment
variable `ARHMM_EQX_MALLOC_TRIM=1` read at import. It is process-wide (it also trims after
compilations that are not ours), and trimming hands freed pages back at once, which turns any
latent use-after-free in native code into a crash instead of a harmless read. A full test
run with it on ended in a segmentation fault inside an XLA compilation (the cause was not
established), so it is not on by default. On systems without glibc it does nothing.
"""

import ctypes
import ctypes.util
import os

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


# One listener is registered for the life of the process (older JAX versions cannot
# unregister one); this flag says whether it trims.
_enabled = [False]


def _trim_after_compile(event: str, duration_secs: float, **kwargs) -> None:
    if _enabled[0] and event == COMPILE_EVENT and _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def release_memory_after_compile(enable: bool = True) -> bool:
    """Switch on or off (the default) the trim of `malloc`'s free memory after each XLA
    compilation in this process.

    **Returns:** whether the trim is available here (glibc); where it is not, this does nothing.
    """
    if enable and not _enabled[0] and _trim_after_compile not in _registered:
        jax.monitoring.register_event_duration_secs_listener(_trim_after_compile)
        _registered.append(_trim_after_compile)
    _enabled[0] = bool(enable)
    return _MALLOC_TRIM is not None


_registered: list = []
release_memory_after_compile(os.environ.get("ARHMM_EQX_MALLOC_TRIM", "0") == "1")
