"""Every core busy on a CPU: one JAX CPU device per core, and each call's sequences split over them.

The state step's scans over time are bound by latency, not arithmetic, and XLA runs one
program's loops on one thread: two independent scans in one program still run one after the
other. Separate devices run at the same time. So:

- `request_cpu_devices()`, run when the package is imported, asks JAX for one CPU device per
  usable core, but only if JAX has not started yet and nobody chose a count already
  (`XLA_FLAGS=--xla_force_host_platform_device_count=...`, `jax_num_cpu_devices`,
  `JAX_NUM_CPU_DEVICES`). `ARHMM_EQX_CPU_DEVICES=n` asks for `n` instead (1 turns it off).
  The default device stays the first CPU device, so nothing else moves.
- `sequence_mesh(x)` is the mesh over which one call splits the sequences of concrete CPU
  data: the largest number of CPU devices that divides `N`, when the data hold at least
  `MIN_FRAMES` frames (below that the split costs more than it saves). The entry points put
  their inputs on it, run the same compiled program (GSPMD partitions it; the random draws do
  not depend on the split) and bring the results back to the first device with
  `to_first_device`, so users see arrays where they saw them before.
- `per_sequence_on_cores` is the other way, for a pass whose gathers are indexed by each
  sequence's own state (Viterbi's backward pass): each device runs it on its own sequences
  under `shard_map`, with no communication, where GSPMD made those gathers per-frame exchanges.

Nothing here applies with several processes (they have their own meshes), under a caller's
`jit`, on accelerators, or to data the caller has already spread over devices.
"""

import functools
import os
import warnings

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ._sharding import SEQUENCES, chain_mesh, shard_one_chain


ENV = "ARHMM_EQX_CPU_DEVICES"
# Below this many frames per call the split is not worth its dispatch and copies (measured on
# 2 cores, warm sweeps: 20,000 frames gain nothing; 100,000 frames 1.2x; 720,000 frames 1.24x).
MIN_FRAMES = 32_768
MAX_DEVICES = 64  # beyond this, more devices than a call has sequences to give them


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _requested() -> int | None:
    """The number of CPU devices to ask for, from `ARHMM_EQX_CPU_DEVICES` or the cores."""
    value = os.environ.get(ENV, "auto").strip().lower()
    if value in ("", "auto"):
        return min(_usable_cores(), MAX_DEVICES)
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        warnings.warn(f"{ENV} must be 'auto' or a positive number of CPU devices; got {value!r}. "
                      "Using one CPU device.", RuntimeWarning, stacklevel=3)
        return None
    return n


def request_cpu_devices() -> None:
    """At import: one CPU device per usable core, unless JAX runs already or a count was chosen."""
    n = _requested()
    if n is None or n <= 1:
        return
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return  # the user's choice
    if jax.config.jax_num_cpu_devices != -1:
        return  # set by the user, or by JAX_NUM_CPU_DEVICES
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # JAX has started: its devices stay as they are
        if ENV in os.environ:
            warnings.warn(f"{ENV}={os.environ[ENV]} has no effect: JAX was started before arhmm_eqx was "
                          "imported. Import arhmm_eqx first.", RuntimeWarning, stacklevel=3)


@functools.cache
def _mesh(num_devices: int) -> Mesh:
    return chain_mesh(num_devices, devices=jax.local_devices(backend="cpu")[:num_devices])


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def sequence_mesh(x, num_chains: int = 1) -> Mesh | None:
    """The mesh `("chains", "sequences")` over CPU devices for one call on `x` `(N, T, D)`, or None.

    With `num_chains` > 1 (vmapped chains), chains are split first (the largest divisor of
    `num_chains` that the devices allow), then each chain's sequences over what is left.
    """
    if isinstance(x, jax.core.Tracer) or jax.process_count() > 1 or getattr(x, "ndim", 0) != 3:
        return None
    try:
        cpus = jax.local_devices(backend="cpu")
    except RuntimeError:
        return None
    if len(cpus) < 2:
        return None
    if isinstance(x, jax.Array):
        if x.sharding.device_set != {cpus[0]}:
            return None  # on an accelerator, or placed by the caller: left as it is
    elif jax.default_backend() != "cpu":
        return None
    N, T = x.shape[:2]
    if num_chains * N * T < MIN_FRAMES:
        return None
    c = _largest_divisor(num_chains, len(cpus))
    s = _largest_divisor(N, len(cpus) // c)
    if c * s < 2:
        return None
    if c == 1:
        return _mesh(s)
    return chain_mesh(s, devices=cpus[: c * s])


def _arrays(fn, tree):
    return jtu.tree_map(lambda a: fn(a) if isinstance(a, (jax.Array, np.ndarray)) else a, tree)


def splits(model) -> bool:
    """Whether calls on `model` split over CPU devices: not with per-group transition matrices,
    whose per-sequence gathers of `pi` the partitioner turns into per-frame communication
    (measured at the MoSeq-typical size: a sweep of 19.4 s split against 2.6 s on one device)."""
    return model.hyperparams.num_groups is None


def replicated(tree, mesh: Mesh):
    """Every array leaf of `tree` on every device of `mesh` (Python scalars stay as they are)."""
    return _arrays(lambda a: jax.device_put(a, NamedSharding(mesh, P())), tree)


def split(tree, mesh: Mesh):
    """Every leaf of `tree` split over the mesh axis `"sequences"` along its first axis."""
    return jax.device_put(tree, NamedSharding(mesh, P(SEQUENCES)))


def to_first_device(tree, mesh: Mesh):
    """Every array leaf of `tree` back on the mesh's first device, where a call without the
    split would have left it."""
    device = mesh.devices.flat[0]
    return _arrays(lambda a: jax.device_put(a, device), tree)


def on_cores(fn, model, x, mask, *args, states_of_x: bool = True):
    """`fn(model, x, mask, *args)`, with the sequences split over CPU devices when
    `sequence_mesh(x)` gives a mesh: the data split, the model's states split too when they are
    those of `x` (`states_of_x`), the rest of the model and `args` (arrays or keys) on every
    device; the results come back on the first device."""
    mesh = sequence_mesh(x) if splits(model) else None
    if mesh is None:
        return fn(model, x, mask, *args)
    if states_of_x:
        model, x, mask = shard_one_chain(model, x, mask, mesh)
    else:  # a model applied to other data: its own states are not split with them
        model, (x, mask) = replicated(model, mesh), split((x, mask), mesh)
    return to_first_device(fn(model, x, mask, *replicated(args, mesh)), mesh)


@functools.cache
def _per_sequence_program(fn, static, mesh: Mesh):
    def local(x, mask, dynamic):
        return fn(x, mask, eqx.combine(dynamic, static))

    seq = P(SEQUENCES)
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(seq, seq, P()), out_specs=seq, check_vma=False))


def per_sequence_on_cores(fn, x, mask, shared):
    """`fn(x, mask, shared)` for an `fn` that treats every sequence on its own and returns arrays
    with the sequences first, with the sequences split over CPU devices when `sequence_mesh(x)`
    gives a mesh. Each device runs `fn` on its own sequences (`shard_map`: no communication
    at all, where the partitioner of `on_cores` can turn per-frame gathers indexed by a
    sequence's state into per-frame exchanges); `shared` (a pytree, e.g. a model) goes to every
    device; the results come back on the first device. `fn` must be a module-level function
    (its compiled program is cached by `fn`, the static part of `shared` and the mesh)."""
    mesh = sequence_mesh(x)
    if mesh is None:
        return None
    dynamic, static = eqx.partition(shared, eqx.is_array)
    x, mask = split((x, mask), mesh)
    out = _per_sequence_program(fn, static, mesh)(x, mask, replicated(dynamic, mesh))
    return to_first_device(out, mesh)
