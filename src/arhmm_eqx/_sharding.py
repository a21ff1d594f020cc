"""Sharding of chains (and sequences) across devices with `jax.sharding`: a mesh and named shardings.

The same code runs on one CPU, on several GPUs of one host, and on many hosts after
`jax.distributed.initialize()`: `chain_mesh()` spans `jax.devices()` (every device of every
process), the batched models are placed with their chain axis on the mesh axis `"chains"`,
and the data are replicated or split over sequences on the mesh axis `"sequences"`. `jit`
then partitions the vmapped sweep itself (GSPMD); the library adds no collective by hand.

With several processes, each process may load only the sequences its devices hold
(`process_sequences`) and assemble the global `x`, `mask` with `shard_sequences`; arrays that
are already global (spread over processes) are passed to `jit` as they are.
"""

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ._checks import check_int


CHAINS = "chains"
SEQUENCES = "sequences"


def chain_mesh(num_sequence_shards: int = 1, *, devices=None) -> Mesh:
    """A 2-D device mesh with axes `("chains", "sequences")`.

    **Arguments:**

    - `num_sequence_shards`: how many devices share one chain by splitting its sequences
      (the `N` axis of `x`); 1 (the default) puts whole chains on devices. Use more for
      datasets too long for one device's memory.
    - `devices`: the devices to use; default `jax.devices()` (all devices of all processes).

    **Returns:** a `jax.sharding.Mesh` of shape `(len(devices) // num_sequence_shards,
    num_sequence_shards)`.
    """
    devices = list(jax.devices() if devices is None else devices)
    s = num_sequence_shards
    if check_int("num_sequence_shards", s) and len(devices) % s:
        raise ValueError(
            f"`num_sequence_shards` must be a positive int dividing the number of devices ({len(devices)}); got {s!r}."
        )
    return Mesh(np.asarray(devices, dtype=object).reshape(len(devices) // s, s), (CHAINS, SEQUENCES))


def check_mesh(mesh: Mesh, num_chains: int, num_sequences: int) -> None:
    """Raise a clear `ValueError` when the chains or sequences do not split evenly over `mesh`."""
    if not isinstance(mesh, Mesh) or set(mesh.axis_names) != {CHAINS, SEQUENCES}:
        raise ValueError(
            f"`mesh` must be a jax.sharding.Mesh with axes ('{CHAINS}', '{SEQUENCES}'), as `chain_mesh()` builds; "
            f"got {mesh!r}."
        )
    c, s = mesh.shape[CHAINS], mesh.shape[SEQUENCES]
    if num_chains % c:
        raise ValueError(
            f"{num_chains} chains cannot be split evenly over the {c} devices of the mesh axis '{CHAINS}'. "
            f"Run a multiple of {c} chains, or build a mesh over fewer devices (`chain_mesh(devices=...)`)."
        )
    if num_sequences % s:
        raise ValueError(
            f"`x` has N = {num_sequences} sequences, which cannot be split evenly over the {s} devices of the mesh "
            f"axis '{SEQUENCES}'. Pad `x` with fully masked sequences to a multiple of {s}, or use fewer "
            "sequence shards."
        )


def _model_specs(models):
    """`PartitionSpec`s for a batched model: chain axis first; `states.z` also split over sequences."""
    specs = jtu.tree_map(lambda _: P(CHAINS), models)
    if models.states.tau is not None:  # a robust model's per-frame precisions: split as `z`
        specs = eqx.tree_at(lambda m: m.states.tau, specs, P(CHAINS, SEQUENCES))
    return eqx.tree_at(lambda m: m.states.z, specs, P(CHAINS, SEQUENCES))


def model_shardings(models, mesh: Mesh):
    """`NamedSharding`s for every leaf of a batched model (leading chain axis)."""
    return jtu.tree_map(lambda spec: NamedSharding(mesh, spec), _model_specs(models),
                        is_leaf=lambda v: isinstance(v, P))


def data_shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """Shardings of `x` `(N, T, D)` and `mask` `(N, T)`: split over sequences, replicated over chains."""
    return NamedSharding(mesh, P(SEQUENCES)), NamedSharding(mesh, P(SEQUENCES))


def keys_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of the per-chain keys `(C,)`."""
    return NamedSharding(mesh, P(CHAINS))


def shard_chains(models, x, mask, mesh: Mesh):
    """Place a batched model and the shared data on `mesh` (see the module docstring).

    **Returns:** `(models, x, mask)` as sharded `jax.Array`s. On several hosts each process
    passes the same full arrays (every process loads the same data).
    """
    x_sharding, mask_sharding = data_shardings(mesh)
    shardings = (model_shardings(models, mesh), x_sharding, mask_sharding)
    return jtu.tree_map(_place, (models, x, mask), shardings)


def _place(leaf, sharding: NamedSharding):
    """One leaf on `sharding`. A global array (spread over processes) stays as it is: the `jit`
    that takes it reshards it (`constrain`). With several processes, a local array holds the same
    host values in every process and becomes a global array."""
    if is_global(leaf):
        return leaf
    if jax.process_count() > 1:
        leaf = jax.device_get(leaf)
    return jax.device_put(leaf, sharding)


def is_global(a) -> bool:
    """Whether `a` is a `jax.Array` with pieces on other processes' devices."""
    return isinstance(a, jax.Array) and not a.is_fully_addressable


def process_sequences(mesh: Mesh, num_sequences: int) -> slice:
    """The sequences (rows of `x`) that this process loads for `shard_sequences`.

    On a mesh from `chain_mesh(num_sequence_shards=...)` each process's devices hold some of
    the sequence shards; this is the slice of `range(num_sequences)` they cover. With one
    process (or sequences not split over processes) it is every sequence.

    **Arguments:**

    - `mesh`: a mesh from `chain_mesh`.
    - `num_sequences`: `N`, the number of sequences of the whole data set; a multiple of the
      size of the mesh axis `"sequences"`.

    **Returns:** a `slice` of the sequence axis, e.g. `slice(0, 4)` for the first process of
    two over `N = 8` sequences.
    """
    num_sequences = check_int("num_sequences", num_sequences)
    check_mesh(mesh, mesh.shape[CHAINS], num_sequences)
    indices = NamedSharding(mesh, P(SEQUENCES)).addressable_devices_indices_map((num_sequences,))
    blocks = sorted({s[0].indices(num_sequences)[:2] for s in indices.values()})
    start, stop = blocks[0]
    for a, b in blocks[1:]:
        if a > stop:
            raise ValueError(
                f"this process's devices hold sequences {blocks}, which are not one contiguous range; build the "
                "mesh with `chain_mesh(devices=...)` so that each process's devices are adjacent in it."
            )
        stop = max(stop, b)
    return slice(start, stop)


def shard_sequences(x_local, mask_local, mesh: Mesh, *, num_sequences: int):
    """Global `x`, `mask`, split over the mesh axis `"sequences"`, from each process's own sequences.

    Each process passes only the rows `process_sequences(mesh, num_sequences)` of the data
    set, and no process ever holds the whole `x`. Call it in every process, then pass the
    results to `init_chains` and `run_chains` with the same `mesh`.

    **Arguments:**

    - `x_local` `(n, T, D)`, `mask_local` `(n, T)`: this process's sequences (NumPy or JAX
      arrays), `n = len(range(N)[process_sequences(mesh, N)])`.
    - `mesh`: a mesh from `chain_mesh`.
    - `num_sequences`: `N`, the number of sequences of the whole data set.

    **Returns:** `(x, mask)`, `jax.Array`s of shapes `(N, T, D)` and `(N, T)` whose pieces lie
    on the devices of every process.
    """
    rows = process_sequences(mesh, num_sequences)
    n = rows.stop - rows.start
    x_local, mask_local = np.asarray(x_local), np.asarray(mask_local)
    if x_local.ndim != 3 or x_local.shape[0] != n:
        raise ValueError(
            f"`x_local` must hold this process's {n} sequences, sequences {rows.start} .. {rows.stop - 1} of "
            f"N = {num_sequences} (`process_sequences(mesh, num_sequences)`), shape (n, T, D) = ({n}, T, D); "
            f"got shape {x_local.shape}."
        )
    if mask_local.shape != x_local.shape[:2]:
        raise ValueError(f"`mask_local` must have shape (n, T) = {x_local.shape[:2]} to match `x_local`; "
                         f"got shape {mask_local.shape}.")
    x_sharding, mask_sharding = data_shardings(mesh)
    T, D = x_local.shape[1:]
    x = jax.make_array_from_process_local_data(x_sharding, x_local, (num_sequences, T, D))
    mask = jax.make_array_from_process_local_data(mask_sharding, mask_local, (num_sequences, T))
    return x, mask


def gather(tree):
    """Every leaf of `tree` as a NumPy array holding its whole value, in every process
    (`process_allgather`: every process must call it). Local arrays are fetched as they are."""
    from jax.experimental import multihost_utils

    given, treedef = jtu.tree_flatten(tree)
    spread = [i for i, leaf in enumerate(given) if is_global(leaf)]
    leaves = jax.device_get([None if i in spread else leaf for i, leaf in enumerate(given)])
    if spread:  # one collective for all of them
        whole = multihost_utils.process_allgather([given[i] for i in spread], tiled=True)
        for i, value in zip(spread, whole):
            leaves[i] = np.asarray(value)
    return jtu.tree_unflatten(treedef, leaves)


def constrain(models, keys, x, mask, mesh: Mesh | None):
    """Inside `jit`: pin the shardings of the inputs of the vmapped chains (no-op without a mesh)."""
    if mesh is None:
        return models, keys, x, mask
    wsc = jax.lax.with_sharding_constraint
    x_sharding, mask_sharding = data_shardings(mesh)
    return (wsc(models, model_shardings(models, mesh)), wsc(keys, keys_sharding(mesh)), wsc(x, x_sharding),
            wsc(mask, mask_sharding))


def shard_one_chain(model, x, mask, mesh: Mesh):
    """Place one model (no chain axis) and its data on `mesh`: `x`, `mask` and the states split
    over the mesh axis `"sequences"`, everything else on every device. For `fit`."""
    specs = eqx.tree_at(lambda m: m.states.z, jtu.tree_map(lambda _: P(), model), P(SEQUENCES))
    if model.states.tau is not None:  # a robust model's per-frame precisions: split as `z`
        specs = eqx.tree_at(lambda m: m.states.tau, specs, P(SEQUENCES))
    shardings = jtu.tree_map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda v: isinstance(v, P))
    x_sharding, mask_sharding = data_shardings(mesh)
    return jtu.tree_map(_place, (model, x, mask), (shardings, x_sharding, mask_sharding))
