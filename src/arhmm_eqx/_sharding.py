"""Sharding of chains (and sequences) across devices with `jax.sharding`: a mesh and named shardings.

The same code runs on one CPU, on several GPUs of one host, and on many hosts after
`jax.distributed.initialize()`: `chain_mesh()` spans `jax.devices()` (every device of every
process), the batched models are placed with their chain axis on the mesh axis `"chains"`,
and the data are replicated or split over sequences on the mesh axis `"sequences"`. `jit`
then partitions the vmapped sweep itself (GSPMD); the library adds no collective by hand.
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
    if jax.process_count() > 1:  # from host values, the same in every process, to global arrays
        models, x, mask = jax.device_get((models, x, mask))
    models = jax.device_put(models, model_shardings(models, mesh))
    x_sharding, mask_sharding = data_shardings(mesh)
    return models, jax.device_put(x, x_sharding), jax.device_put(mask, mask_sharding)


def constrain(models, keys, x, mask, mesh: Mesh | None):
    """Inside `jit`: pin the shardings of the inputs of the vmapped chains (no-op without a mesh)."""
    if mesh is None:
        return models, keys, x, mask
    wsc = jax.lax.with_sharding_constraint
    x_sharding, mask_sharding = data_shardings(mesh)
    return (wsc(models, model_shardings(models, mesh)), wsc(keys, keys_sharding(mesh)), wsc(x, x_sharding),
            wsc(mask, mask_sharding))
