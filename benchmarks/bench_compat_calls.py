"""Warm per-call wall time of every function of `arhmm_eqx.compat`.

Each function is called once to compile, then `--repeats` more times; the median of those
warm calls (outputs blocked on) is printed in milliseconds. The problem is small and
MoSeq-like: `N` sequences of `T` frames, latent_dim `D`, `nlags` `L`, `K` states. Run by
hand from the repository root:

    python benchmarks/bench_compat_calls.py
    python benchmarks/bench_compat_calls.py --N 8 --T 2000 --K 50 --repeats 9
"""

import argparse
import statistics
import time


def calls(N: int, T: int, D: int, L: int, K: int):
    """`(name, thunk)` for every compat function, on one shared problem."""
    import jax.random as jr
    import numpy as np

    from arhmm_eqx import compat
    from arhmm_eqx.compat import generate, gibbs, initialize, log_prob

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(N, T, D)), axis=1).astype(np.float32) * 0.1
    mask = np.ones((N, T), np.float32)
    mask[-1, T - T // 5 :] = 0.0  # trailing padding of the last sequence
    data = {"x": x, "mask": mask}
    trans = {"num_states": K, "alpha": 5.7, "gamma": 1e3, "kappa": 1e4}
    ar = {"latent_dim": D, "nlags": L, "S_0_scale": 0.01, "K_0_scale": 10.0}
    hyp = initialize.init_hyperparams(trans, ar)
    seed = jr.PRNGKey(0)
    model = initialize.init_model(data, hypparams=hyp, seed=seed)
    params, states = model["params"], model["states"]
    out = [
        ("init_hyperparams", lambda: initialize.init_hyperparams(trans, ar)),
        ("init_ar_params", lambda: initialize.init_ar_params(seed, **hyp["ar_hypparams"])),
        ("init_params", lambda: initialize.init_params(seed, **hyp)),
        ("init_states", lambda: initialize.init_states(seed, x, mask, params)),
        ("init_model", lambda: initialize.init_model(data, hypparams=hyp, seed=seed)),
        ("init_model (states given)", lambda: initialize.init_model(data, states=states, hypparams=hyp, seed=seed)),
        ("resample_discrete_stateseqs", lambda: gibbs.resample_discrete_stateseqs(seed, **data, **params)),
        ("stateseq_marginals", lambda: gibbs.stateseq_marginals(**data, **params)),
        ("resample_ar_params", lambda: gibbs.resample_ar_params(seed, **data, **states, **hyp["ar_hypparams"])),
        (
            "resample_hdp_transitions",
            lambda: gibbs.resample_hdp_transitions(seed, **data, **states, **params, **hyp["trans_hypparams"]),
        ),
        ("resample_model", lambda: gibbs.resample_model(data, **model)),
        ("resample_model (states_only)", lambda: gibbs.resample_model(data, **model, states_only=True)),
        ("discrete_stateseq_log_prob", lambda: log_prob.discrete_stateseq_log_prob(**states, **params)),
        ("continuous_stateseq_log_prob", lambda: log_prob.continuous_stateseq_log_prob(x, **states, **params)),
        ("log_joint_likelihood", lambda: log_prob.log_joint_likelihood(**data, **states, **params)),
        ("model_likelihood", lambda: log_prob.model_likelihood(data, states, params, hyp)),
        ("state_cross_likelihoods", lambda: log_prob.state_cross_likelihoods(params, {**states, "x": x}, mask)),
        ("marginal_log_likelihood", lambda: log_prob.marginal_log_likelihood(**data, **params)),
        ("generate_states", lambda: generate.generate_states(seed, params["pi"], params["Ab"], params["Q"], T)),
        ("model_to_dict", lambda: compat.model_to_dict(compat.model_from_dict(model), model["seed"])),
    ]
    if hasattr(gibbs, "stateseq_mode"):
        out.insert(8, ("stateseq_mode", lambda: gibbs.stateseq_mode(**data, **params)))
    return out


def main():
    import jax

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", type=int, default=4)
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--D", type=int, default=8)
    parser.add_argument("--L", type=int, default=3)
    parser.add_argument("--K", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"N={args.N} T={args.T} D={args.D} nlags={args.L} K={args.K}, {jax.devices()[0].platform}")
    print(f"{'function':34s} {'warm ms (median)':>17s}")
    for name, thunk in calls(args.N, args.T, args.D, args.L, args.K):
        jax.block_until_ready(thunk())
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(thunk())
            times.append(time.perf_counter() - t0)
        print(f"{name:34s} {1e3 * statistics.median(times):17.2f}", flush=True)


if __name__ == "__main__":
    main()
