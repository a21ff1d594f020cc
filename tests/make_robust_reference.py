"""Write `data/robust_reference.npz`: outputs of the reference's robust AR-HMM (jax_moseq
`models.robust_arhmm`) on fixed inputs, for `test_robust.py`. Run with a Python that has jax_moseq:
`python tests/make_robust_reference.py`."""

import pathlib

import jax
import numpy as np


jax.config.update("jax_enable_x64", True)


def inputs():
    rng = np.random.default_rng(12)
    K, D, L, N, T = 3, 2, 2, 2, 14
    Ab = 0.4 * rng.normal(size=(K, D, D * L + 1))
    B = rng.normal(size=(K, D, D))
    Q = B @ np.swapaxes(B, 1, 2) + 0.5 * np.eye(D)
    nu = np.array([1.7, 4.0, 12.0])
    pi = rng.dirichlet(np.ones(K) + 5 * np.eye(K)[0], size=K)
    x = rng.standard_t(3, size=(N, T, D))
    z = rng.integers(0, K, size=(N, T - L))
    mask = np.ones((N, T))
    return dict(Ab=Ab, Q=Q, nu=nu, pi=pi, x=x, z=z, mask=mask)


def main():
    from jax_moseq.models import robust_arhmm as ref

    a = inputs()
    out = dict(a)
    out["ll_state1"] = ref.robust_ar_log_likelihood(a["x"], (a["Ab"][1], a["Q"][1], a["nu"][1]))
    out["tau_a"], out["tau_b"] = ref.tau_posterior_params(a["x"], a["z"], a["Ab"], a["Q"], a["nu"])
    out["nu_grid"] = np.linspace(0.5, 20, 9)
    out["nu_logpost"] = ref.nu_log_posterior(out["nu_grid"], 37.0, 1.1, -0.3)
    lj = ref.log_joint_likelihood(a["x"], a["mask"], a["z"], a["pi"], a["Ab"], a["Q"], a["nu"])
    out["lj_x"], out["lj_z"] = lj["x"], lj["z"]
    out["marginal"] = ref.marginal_log_likelihood(a["mask"], a["x"], a["Ab"], a["Q"], a["pi"], a["nu"])
    out["smoothed"] = ref.stateseq_marginals(a["x"], a["mask"], a["Ab"], a["Q"], a["nu"], a["pi"])
    out["mode"] = ref.stateseq_mode(a["x"], a["mask"], a["Ab"], a["Q"], a["nu"], a["pi"])
    path = pathlib.Path(__file__).parent / "data" / "robust_reference.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in out.items()})
    print("wrote", path)


if __name__ == "__main__":
    main()
