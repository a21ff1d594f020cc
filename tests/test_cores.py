"""Every core busy: one CPU device per core, asked for at import, and large calls split their
sequences over them with the same results as on one device (`_cores`)."""

import os
import subprocess
import sys

import jax
import jax.random as jr
import numpy as np
import pytest

import arhmm_eqx as ae
from arhmm_eqx import _cores
from arhmm_eqx.compat import gibbs as compat_gibbs, initialize as compat_initialize


def _devices_in_fresh_process(env_extra: dict, code: str = "import arhmm_eqx, jax") -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES", _cores.ENV)}
    env.update(env_extra, JAX_PLATFORMS="cpu")
    code += "; print(len(jax.devices('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_import_asks_for_one_cpu_device_per_core_unless_told_otherwise():
    cores = min(len(os.sched_getaffinity(0)), _cores.MAX_DEVICES)
    assert _devices_in_fresh_process({}) == cores
    assert _devices_in_fresh_process({_cores.ENV: "3"}) == 3
    assert _devices_in_fresh_process({_cores.ENV: "1"}) == 1
    # a count the user chose is kept
    assert _devices_in_fresh_process({"XLA_FLAGS": "--xla_force_host_platform_device_count=5"}) == 5
    assert _devices_in_fresh_process({"JAX_NUM_CPU_DEVICES": "4"}) == 4
    # JAX already running: its devices stay, and the import does not fail
    assert _devices_in_fresh_process({}, "import jax, jax.numpy as jnp; jnp.zeros(1); import arhmm_eqx") == 1


def test_a_bad_setting_warns_and_uses_one_device():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update({_cores.ENV: "many", "JAX_PLATFORMS": "cpu"})
    code = "import arhmm_eqx, jax; print(len(jax.devices('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"
    assert "ARHMM_EQX_CPU_DEVICES must be 'auto' or a positive number" in out.stderr


two_devices = pytest.mark.skipif(len(jax.local_devices(backend="cpu")) < 2,
                                 reason="needs two CPU devices (a machine with two cores or more)")


@two_devices
def test_which_calls_split(monkeypatch):
    x = np.zeros((4, 100, 2), np.float32)
    monkeypatch.setattr(_cores, "MIN_FRAMES", 0)
    mesh = _cores.sequence_mesh(x)
    assert mesh is not None and mesh.shape == {"chains": 1, "sequences": 2}
    assert _cores.sequence_mesh(x[:3]) is None  # 3 sequences: no divisor above one fits 2 devices
    assert _cores.sequence_mesh(x, num_chains=2).shape == {"chains": 2, "sequences": 1}  # chains first
    assert _cores.sequence_mesh(jax.device_put(x, jax.devices()[1])) is None  # placed by the caller
    assert _cores.sequence_mesh(_cores.split(x, mesh)) is None  # spread by the caller
    assert jax.jit(lambda a: _cores.sequence_mesh(a) is None)(x)  # traced: the caller's program
    monkeypatch.setattr(_cores, "MIN_FRAMES", 401)
    assert _cores.sequence_mesh(x) is None  # too small to be worth it


# The entry points that split, in two sets: the sweep, the marginal likelihood, the
# reference's `resample_model` and Viterbi (per device, `shard_map`) in every run; the other
# drivers in the extended tier (compile time).
ENTRY_POINTS = [
    pytest.param(("gibbs_step", "marginal", "compat", "viterbi"), id="sweep-marginal-compat-viterbi"),
    pytest.param(("run_chain", "run_chains", "fit", "resample", "smoother"), id="drivers",
                 marks=pytest.mark.extended),
]


@two_devices
@pytest.mark.parametrize("names", ENTRY_POINTS)
def test_split_calls_give_the_results_of_one_device(monkeypatch, names):
    """Each entry point that splits: the same states bit for bit, floats equal or to rounding,
    and the results on the first device, as without the split."""
    N, T, D, L, K = 4, 300, 2, 1, 4
    hp = ae.Hyperparams.from_scales(K, D, L, alpha=5.0, gamma=10.0, kappa=50.0)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(N, T, D)).astype(np.float32)
    x = np.zeros_like(noise)
    for t in range(1, T):  # a stable AR(1) whose coefficient switches sign every 50 frames
        x[:, t] = (0.9 if (t // 50) % 2 else -0.9) * x[:, t - 1] + noise[:, t]
    mask = np.ones((N, T), np.float32)
    mask[-1, -40:] = 0.0
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(2))
    data = {"x": x, "mask": mask}

    def compat_sweep():
        hyp = compat_initialize.init_hyperparams(dict(num_states=K, alpha=5.0, gamma=10.0, kappa=50.0),
                                                 dict(latent_dim=D, nlags=L, S_0_scale=0.01, K_0_scale=10.0))
        d = compat_gibbs.resample_model(data, **compat_initialize.init_model(data, hypparams=hyp,
                                                                             seed=jr.PRNGKey(4)))
        return d["states"]["z"], d["params"]

    calls = {
        "gibbs_step": lambda: ae.gibbs_step(jr.key(5), model, x, mask),
        "marginal": lambda: model.marginal_log_likelihood(x, mask),
        "compat": compat_sweep,
        "run_chain": lambda: ae.run_chain(jr.key(6), model, x, mask, 2),
        "run_chains": lambda: ae.run_chains(jr.key(7), ae.init_chains(hp, x, mask, key=jr.key(3), num_chains=2),
                                            x, mask, 2),
        "fit": lambda: ae.workflow.fit(model, x, mask, key=jr.key(8), num_iters=2, progress=False).model,
        "resample": lambda: model.resample(x, mask, key=jr.key(9)),
        "smoother": lambda: model.stateseq_marginals(x, mask),
        "viterbi": lambda: model.most_likely_states(x, mask),  # masked frames filled with -1
    }
    split_calls = []
    first_device = _cores.to_first_device
    monkeypatch.setattr(_cores, "to_first_device", lambda tree, mesh: split_calls.append(mesh) or first_device(
        tree, mesh))
    monkeypatch.setattr(_cores, "MIN_FRAMES", 0)
    split = {name: calls[name]() for name in names}
    assert len(split_calls) == len(names)  # every one of them split its sequences (or chains)
    monkeypatch.setattr(_cores, "MIN_FRAMES", 10**12)
    one = {name: calls[name]() for name in names}
    assert len(split_calls) == len(names)
    for name in names:
        leaves_split, leaves_one = jax.tree.leaves(split[name]), jax.tree.leaves(one[name])
        assert len(leaves_split) == len(leaves_one), name
        for a, b in zip(leaves_split, leaves_one):
            assert a.sharding.device_set == {jax.devices()[0]}, name  # back where one device leaves it
            if np.issubdtype(a.dtype, np.integer):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
            else:  # sums over sequences add partial sums in another order
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=name)
