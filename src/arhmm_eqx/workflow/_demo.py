"""The demo: simulate recordings from a known AR-HMM, fit them by Gibbs sampling, and report the result."""

import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._checks import check_key
from .._custom_types import PRNGKeyArray
from .._hyperparams import Hyperparams
from .._model import ARHMM
from .._params import Params
from .._run import run_chain
from .._states import States


def example_model(key, num_states: int, latent_dim: int, nlags: int, mean_duration: float) -> ARHMM:
    """A well-separated AR-HMM to simulate from (the demo's ground truth): every state rotates
    the first two dimensions by its own angle about its own fixed point, noise `Q = 0.01 I`, and
    `pi` stays in a state for `mean_duration` frames on average. `betas` are uniform and
    `states` a placeholder: simulate with `model.simulate(...)`."""
    K, D = num_states, latent_dim
    keys = jr.split(key, 3)
    angles = jnp.linspace(0.1, 0.6, K)
    Ab = []
    for k in range(K):
        A1 = 0.9 * jnp.eye(D)
        c, s = jnp.cos(angles[k]), jnp.sin(angles[k])
        A1 = A1.at[:2, :2].set(0.95 * jnp.array([[c, -s], [s, c]]))
        lags = jnp.concatenate([jnp.zeros((D, D * (nlags - 1))), A1], axis=1)
        bias = 0.5 * jr.normal(jr.fold_in(keys[0], k), (D, 1))
        Ab.append(jnp.concatenate([lags, bias], axis=1))
    Ab = jnp.stack(Ab)
    Q = jnp.broadcast_to(0.01 * jnp.eye(D), (K, D, D))
    stay = 1.0 - 1.0 / mean_duration
    pi = jnp.full((K, K), (1 - stay) / (K - 1)) + (stay - (1 - stay) / (K - 1)) * jnp.eye(K)
    hp = Hyperparams.from_scales(K, D, nlags)
    return ARHMM(hp, Params(Ab=Ab, Q=Q, pi=pi, betas=jnp.full((K,), 1.0 / K)), States(z=jnp.zeros((1, 1), jnp.int32)))


def matched_accuracy(z_true: np.ndarray, z_fit: np.ndarray, num_true: int, num_fit: int) -> float:
    """Fraction of frames whose fitted state maps to the true one under the best one-to-one matching."""
    confusion = np.zeros((num_true, num_fit))
    np.add.at(confusion, (z_true.ravel(), z_fit.ravel()), 1)
    rows, cols = optax.assignment.hungarian_algorithm(jnp.asarray(-confusion))
    return float(confusion[np.asarray(rows), np.asarray(cols)].sum() / z_true.size)


def run_demo(
    *, seed: int = 0, num_sequences: int = 4, num_frames: int = 2000, num_iters: int = 150, verbose: bool = True
) -> dict:
    """Simulate 5 states in 4 dimensions with 2 lags, fit 15 states, print and return a summary."""
    K_true, K_fit, D, L = 5, 15, 4, 2
    key = jr.key(seed)
    key_true, key_sim, key_init, key_fit = jr.split(key, 4)
    truth = example_model(key_true, K_true, D, L, mean_duration=40.0)
    z_true, x = truth.simulate(num_sequences, num_frames, key=key_sim)
    mask = jnp.ones(x.shape[:2])
    hp = Hyperparams.from_scales(K_fit, D, L, kappa=1e3, alpha=5.7, gamma=1e3)
    model = ARHMM.from_prior(hp, x, mask, key=key_init)
    start = time.perf_counter()
    model, info = run_chain(key_fit, model, x, mask, num_iters)
    jax.block_until_ready(model)
    elapsed = time.perf_counter() - start
    z = np.asarray(model.states.z)
    used = np.unique(z)
    acc = matched_accuracy(np.asarray(z_true), z, K_true, K_fit)
    ll = np.asarray(info.log_joint_x)
    summary = {
        "frames": int(mask.sum()),
        "sweeps": num_iters,
        "seconds": elapsed,
        "states_used": int(used.size),
        "accuracy": acc,
        "log_joint_x_first": float(ll[0]),
        "log_joint_x_last": float(ll[-1]),
    }
    if verbose:
        print(f"Simulated {num_sequences} sequences x {num_frames} frames from {K_true} states (D={D}, nlags={L}).")
        print(f"Fitted {K_fit}-state sticky HDP AR-HMM: {num_iters} Gibbs sweeps in {elapsed:.1f} s "
              "(including compilation).")
        for i in np.linspace(0, num_iters - 1, 6).astype(int):
            print(f"  sweep {i + 1:4d}: log p(x | z, params) = {ll[i]:.1f}")
        print(f"States in use: {used.size}; frame accuracy after Hungarian matching: {100 * acc:.1f} %")
        print("State sequence of sequence 0, first 120 frames:")
        print("  true: " + "".join(f"{v:x}" for v in np.asarray(z_true)[0, :120]))
        print("  fit : " + "".join(chr(ord("a") + int(v)) for v in z[0, :120]))
    return summary


DEMO_SIZES = {"num_true": 5, "num_states": 15, "latent_dim": 4, "nlags": 2}


def simulate_recordings(
    *, key: PRNGKeyArray, num_recordings: int = 4, num_frames: int = 1500
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Recordings of different lengths (from `num_frames` down to about half of it) simulated from
    `example_model` (5 states, D = 4, 2 lags), each after the first with a gap of 15 missing (NaN) frames.
    `key`: a `jax.random.key`, split into the model's key and the simulation's.

    **Returns:** `(recordings, true_states)`: `{name: (T_i, D)}` and `{name: (T_i,)}`, the true
    state of every frame (-1 for the first `nlags` frames, which have none).
    """
    K, D, L = DEMO_SIZES["num_true"], DEMO_SIZES["latent_dim"], DEMO_SIZES["nlags"]
    check_key(key)
    key_true, key_sim = jr.split(key)
    truth = example_model(key_true, K, D, L, mean_duration=40.0)
    z, x = truth.simulate(num_recordings, num_frames, key=key_sim)
    z, x = np.asarray(z), np.asarray(x, np.float64)
    recordings, states = {}, {}
    for i in range(num_recordings):
        length = num_frames - (i * num_frames) // (2 * num_recordings)
        rec = x[i, :length].copy()
        if i > 0:
            gap = length // 3
            rec[gap : gap + 15] = np.nan
        recordings[f"mouse{i}"] = rec
        states[f"mouse{i}"] = np.concatenate([np.full(L, -1), z[i, : length - L]])
    return recordings, states


def states_accuracy(true_states: dict, fitted_states: dict, num_true: int, num_fit: int) -> float:
    """`matched_accuracy` over the frames that carry a state in both `{name: (T_i,)}` dicts."""
    t = np.concatenate([true_states[n] for n in true_states])
    f = np.concatenate([np.asarray(fitted_states[n]) for n in true_states])
    both = (t >= 0) & (f >= 0)
    return matched_accuracy(t[both], f[both], num_true, num_fit)


def print_report(*, frames: int, sweeps: int, seconds: float, log_joint_x, fitted: dict, truth: dict,
                 num_true: int, num_fit: int) -> dict:
    """Print the demo summary (trace, states in use, accuracy, the start of one state sequence)."""
    ll = np.asarray(log_joint_x)
    f = np.concatenate([np.asarray(v) for v in fitted.values()])
    used = np.unique(f[f >= 0])
    acc = states_accuracy(truth, fitted, num_true, num_fit)
    print(f"Fitted a {num_fit}-state sticky HDP AR-HMM to {frames} frames: {sweeps} Gibbs sweeps in {seconds:.1f} s "
          "(including compilation).")
    for i in np.linspace(0, ll.size - 1, min(6, ll.size)).astype(int):
        print(f"  sweep {i + 1:4d}: log p(x | z, params) = {ll[i]:.1f}")
    print(f"States in use: {used.size} (true: {num_true}); frame accuracy after Hungarian matching: {100 * acc:.1f} %")
    name = next(iter(truth))
    print(f"States of {name}, frames 2..121 (true: digits; fitted: letters):")
    print("  true: " + "".join(f"{v:x}" if v >= 0 else "." for v in truth[name][2:122]))
    print("  fit : " + "".join(chr(ord("a") + int(v)) if v >= 0 else "." for v in np.asarray(fitted[name])[2:122]))
    return {"frames": frames, "sweeps": sweeps, "seconds": seconds, "states_used": int(used.size), "accuracy": acc}
