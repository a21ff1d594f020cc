"""JAX's persistent compilation cache for the fit loop and the command line.

Compiling a Gibbs sweep takes seconds to tens of seconds; a notebook restart or a new
command-line call pays it again for the same shapes. JAX can keep compiled programs on disk
and load them instead of compiling (on CPU as on GPU). `fit`, `resume` and the command line
turn that on, in the folder `default_cache_dir()`:

- `$ARHMM_EQX_COMPILE_CACHE` when set to a path; set to `0` (or `off`), nothing is cached;
- else `$XDG_CACHE_HOME/arhmm_eqx/jax`, or `~/.cache/arhmm_eqx/jax`.

A folder the user gave JAX already (`jax_compilation_cache_dir`) is kept. The setting is
process-wide, as any JAX configuration: later compilations of the process that take at least
JAX's threshold (`jax_persistent_cache_min_compile_time_secs`, 1 s by default) are written
there too. Entries are keyed by the program, the shapes, the JAX version and the device, so a
cached program is never used for another one; deleting the folder is always safe.
"""

import os

import jax
from jax.experimental.compilation_cache import compilation_cache


_OFF = ("0", "off", "false", "no")


def default_cache_dir() -> str | None:
    """The folder `fit` and the command line cache compiled programs in (None: caching is off)."""
    env = os.environ.get("ARHMM_EQX_COMPILE_CACHE")
    if env is not None and env.strip().lower() in _OFF:
        return None
    if env:
        return os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "arhmm_eqx", "jax")


def use_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache for this process and return its folder.

    `path`: the folder (created if needed); None uses `default_cache_dir()`, which may say that
    caching is off (`ARHMM_EQX_COMPILE_CACHE=0`; then this returns None and changes nothing).
    A cache folder already configured in JAX is kept and returned. A folder that cannot be
    created leaves caching off, with a warning, instead of failing the fit.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    folder = default_cache_dir() if path is None else os.fspath(path)
    if folder is None:
        return None
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        import warnings

        warnings.warn(f"compiled programs are not cached: cannot create {folder!r} ({e}). Set "
                      "ARHMM_EQX_COMPILE_CACHE to a writable folder, or to 0 to silence this.", RuntimeWarning,
                      stacklevel=2)
        return None
    compilation_cache.set_cache_dir(folder)
    # JAX decides once per process, at its first compilation, whether a cache is in use;
    # a reset makes it look again now that a folder is set.
    compilation_cache.reset_cache()
    return folder
