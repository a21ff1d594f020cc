"""`compat.robust_arhmm.separate_trans`: robust noise with one transition matrix per group.

Each sequence's states are drawn with its own group's matrix: for the same key, row `n` of the
grouped draw equals row `n` of the ungrouped robust draw with `pi[group[n]]` (the uniforms of a
row, and so its states, depend on nothing else). The sweep keeps the reference's dict keys and
shapes (`betas` `(G, K)`, `pi` `(G, K, K)`, shared `Ab`, `Q`, `nu`; `tau` with `z`).
"""

import jax.random as jr
import numpy as np
import pytest

from arhmm_eqx.compat import robust_arhmm
from arhmm_eqx.compat.robust_arhmm import separate_trans


K, D, L, N, T = 3, 2, 1, 4, 60


def _data():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_t(3, size=(N, T, D)), axis=1).astype(np.float32)
    mask = np.ones((N, T), np.float32)
    mask[1, T - 10:] = 0.0
    return {"x": x, "mask": mask, "group": np.array([0, 1, 1, 0])}


def _model(data):
    return separate_trans.init_model(
        data, trans_hypparams={"num_states": K, "alpha": 5.0, "gamma": 100.0, "kappa": 50.0},
        ar_hypparams={"latent_dim": D, "nlags": L, "S_0_scale": 0.1, "K_0_scale": 10.0}, seed=0)


def test_each_sequence_uses_its_groups_matrix():
    data = _data()
    p = _model(data)["params"]
    assert p["pi"].shape == (2, K, K) and p["betas"].shape == (2, K) and p["nu"].shape == (K,)
    key = jr.PRNGKey(7)
    z = np.asarray(separate_trans.resample_discrete_stateseqs(key, data["x"], data["mask"], data["group"], p["Ab"],
                                                              p["Q"], p["nu"], p["pi"]))
    for g in (0, 1):
        single = np.asarray(robust_arhmm.resample_discrete_stateseqs(key, data["x"], data["mask"], p["Ab"], p["Q"],
                                                                     p["nu"], p["pi"][g]))
        rows = data["group"] == g
        np.testing.assert_array_equal(z[rows], single[rows])
    # with every state's dynamics alike, the states follow the matrices alone: group 0 stays put
    # (pi near the identity), group 1 steps k -> k + 1 (a near-cyclic pi)
    eps = 1e-6
    stay = np.full((K, K), eps) + (1 - K * eps) * np.eye(K)
    step = np.full((K, K), eps) + (1 - K * eps) * np.roll(np.eye(K), 1, axis=1)
    pi = np.stack([stay, step]).astype(np.float32)
    Ab = np.broadcast_to(np.asarray(p["Ab"])[0], np.shape(p["Ab"]))
    Q = np.broadcast_to(np.asarray(p["Q"])[0], np.shape(p["Q"]))
    z = np.asarray(separate_trans.resample_discrete_stateseqs(key, data["x"], data["mask"], data["group"], Ab, Q,
                                                              np.full(K, 4.0, np.float32), pi))
    for n, g in enumerate(data["group"]):
        if g == 0:
            assert np.all(z[n] == z[n, 0]), z[n]
        else:
            np.testing.assert_array_equal(z[n, 1:], (z[n, :-1] + 1) % K)


def test_resample_model_keeps_the_reference_keys_and_shapes():
    data = _data()
    model = _model(data)
    assert set(model) == {"seed", "states", "params", "hypparams"}
    assert model["hypparams"]["trans_hypparams"]["num_groups"] == 2
    for _ in range(2):
        model = separate_trans.resample_model(data, **model)
    p, s = model["params"], model["states"]
    assert {k: np.shape(v) for k, v in p.items()} == {"betas": (2, K), "pi": (2, K, K), "Ab": (K, D, D * L + 1),
                                                      "Q": (K, D, D), "nu": (K,)}
    assert s["z"].shape == s["tau"].shape == (N, T - L)
    np.testing.assert_allclose(np.asarray(p["pi"]).sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(p["nu"]) > 0) and np.all(np.isfinite(np.asarray(s["tau"])))
    only = separate_trans.resample_model(data, **model, states_only=True)
    for k in p:  # parameters untouched, states redrawn
        np.testing.assert_array_equal(np.asarray(only["params"][k]), np.asarray(p[k]))


def test_bad_group_is_reported():
    data = _data()
    model = _model(data)
    with pytest.raises(ValueError, match="group"):
        separate_trans.resample_model({**data, "group": np.array([0, 1, 2, 0])}, **model)
