"""Every public entry point that takes arrays runs as one compiled program on a warm call.

A warm call must not dispatch JAX operations one by one (each is a separate small program,
and on a long loop of calls they dominate). The count is of XLA programs executed: JAX's
C++ fast path of `jit` is switched off for this module, so that every execution, whether
of a `jit`-compiled function or of a single eagerly dispatched primitive, goes through
`ExecuteReplicated.__call__`, which is wrapped to record the program's name. No timing.
"""

import inspect

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax._src import pjit
from jax._src.interpreters import pxla

import arhmm_eqx as ae
from arhmm_eqx import compat
from arhmm_eqx.compat import generate, gibbs, initialize, log_prob


N, T, D, L, K = 2, 24, 2, 2, 3


class _Recorder:
    def __init__(self):
        self.names = None

    def warm(self, thunk) -> list[str]:
        """Call `thunk` once (compiling), then again, recording the programs of the second call."""
        jax.block_until_ready(thunk())
        self.names = []
        try:
            jax.block_until_ready(thunk())
            return self.names
        finally:
            self.names = None


@pytest.fixture(scope="module")
def recorder():
    assert hasattr(pjit, "_get_fastpath_data") and hasattr(pxla.ExecuteReplicated, "__call__"), (
        "JAX internals changed: update the execution counter of this test module."
    )
    rec = _Recorder()
    original = pxla.ExecuteReplicated.__call__

    def counted(self, *args):
        if rec.names is not None:
            rec.names.append(self.name)
        return original(self, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pjit, "_get_fastpath_data", lambda *args, **kwargs: None)
        mp.setattr(pxla.ExecuteReplicated, "__call__", counted)
        jax.clear_caches()  # programs cached with fast-path data would bypass the counter
        yield rec
    jax.clear_caches()


def test_the_counter_sees_eager_operations(recorder):
    """The harness itself: an eager operation and a jnp function called outside `jit` are
    counted, and a `jit`-compiled function is one program."""
    x = jnp.ones(3)
    assert len(recorder.warm(lambda: jnp.where(x > 0, x + 1, x))) == 3
    f = jax.jit(lambda x: jnp.where(x > 0, x + 1, x))
    assert recorder.warm(lambda: f(x)) == ["jit(<lambda>)"]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = (0.3 * np.cumsum(rng.normal(size=(N, T, D)), axis=1)).astype(np.float32)
    mask = np.ones((N, T), np.float32)
    mask[1, T - 5 :] = 0.0
    mask[0, 10:12] = 0.0
    data = {"x": x, "mask": mask}
    trans = {"num_states": K, "alpha": 5.7, "gamma": 1e3, "kappa": 50.0}
    ar = {"latent_dim": D, "nlags": L, "S_0_scale": 0.01, "K_0_scale": 10.0}
    hyp = initialize.init_hyperparams(trans, ar)
    model = initialize.init_model(data, hypparams=hyp, seed=jr.PRNGKey(0))
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=50.0)
    native = ae.ARHMM.from_prior(hp, jax.device_put(x), jax.device_put(mask), key=jr.key(0))
    chains = ae.init_chains(hp, jax.device_put(x), jax.device_put(mask), key=jr.key(2), num_chains=2)
    return {"data": data, "trans": trans, "ar": ar, "hyp": hyp, "model": model, "hp": hp, "native": native,
            "chains": chains}


def _compat_cases(p):
    data, hyp, model, trans, ar = p["data"], p["hyp"], p["model"], p["trans"], p["ar"]
    x, mask = data["x"], data["mask"]
    params, states, seed = model["params"], model["states"], model["seed"]
    return {
        "init_hyperparams": lambda: initialize.init_hyperparams(trans, ar),
        "init_ar_params": lambda: initialize.init_ar_params(seed, **hyp["ar_hypparams"]),
        "init_params": lambda: initialize.init_params(seed, **hyp),
        "init_states": lambda: initialize.init_states(seed, x, mask, params),
        "init_model": lambda: initialize.init_model(data, hypparams=hyp, seed=seed),
        "init_model/states given": lambda: initialize.init_model(data, states=states, hypparams=hyp, seed=seed),
        "init_model/from dicts": lambda: initialize.init_model(data, seed=seed, trans_hypparams=trans, ar_hypparams=ar),
        "resample_discrete_stateseqs": lambda: gibbs.resample_discrete_stateseqs(seed, **data, **params),
        "stateseq_marginals": lambda: gibbs.stateseq_marginals(**data, **params),
        "stateseq_mode": lambda: gibbs.stateseq_mode(**data, **params),
        "resample_ar_params": lambda: gibbs.resample_ar_params(seed, **data, **states, **hyp["ar_hypparams"]),
        "resample_hdp_transitions": lambda: gibbs.resample_hdp_transitions(
            seed, **data, **states, **params, **hyp["trans_hypparams"]
        ),
        "resample_model": lambda: gibbs.resample_model(data, **model),
        "resample_model/states_only": lambda: gibbs.resample_model(data, **model, states_only=True),
        "resample_model/new kappa": lambda: gibbs.resample_model(
            data, **{**model, "hypparams": {**hyp, "trans_hypparams": {**trans, "kappa": np.random.rand() + 1}}}
        ),
        "discrete_stateseq_log_prob": lambda: log_prob.discrete_stateseq_log_prob(**states, **params),
        "continuous_stateseq_log_prob": lambda: log_prob.continuous_stateseq_log_prob(x, **states, **params),
        "log_joint_likelihood": lambda: log_prob.log_joint_likelihood(**data, **states, **params),
        "model_likelihood": lambda: log_prob.model_likelihood(data, states, params, hyp),
        "state_cross_likelihoods": lambda: log_prob.state_cross_likelihoods(params, {**states, "x": x}, mask),
        "marginal_log_likelihood": lambda: log_prob.marginal_log_likelihood(**data, **params),
        "generate_states": lambda: generate.generate_states(seed, params["pi"], params["Ab"], params["Q"], 10),
        "generate_states/init_state": lambda: generate.generate_states(
            seed, params["pi"], params["Ab"], params["Q"], 10, init_state=(1, x[0, :L])
        ),
        "model_from_dict": lambda: compat.model_from_dict(model),
        "model_to_dict": lambda: compat.model_to_dict(p["native"], seed),
    }


def _native_cases(p):
    x, mask = jax.device_put(p["data"]["x"]), jax.device_put(p["data"]["mask"])
    m, hp = p["native"], p["hp"]
    key = jr.key(1)  # made here: a key made inside a call would be an eager operation of the test
    return {
        "ARHMM.from_prior": lambda: ae.ARHMM.from_prior(hp, x, mask, key=key),
        "ARHMM.from_params": lambda: ae.ARHMM.from_params(hp, m.params, x, mask, key=key),
        "ARHMM.resample": lambda: m.resample(x, mask, key=key),
        "ARHMM.log_joint_likelihood": lambda: m.log_joint_likelihood(x, mask),
        "ARHMM.marginal_log_likelihood": lambda: m.marginal_log_likelihood(x, mask),
        "ARHMM.stateseq_marginals": lambda: m.stateseq_marginals(x, mask),
        "ARHMM.most_likely_states": lambda: m.most_likely_states(x, mask),
        "ARHMM.log_prior": lambda: m.log_prior(),
        "ARHMM.log_posterior": lambda: m.log_posterior(x, mask),
        "ARHMM.state_cross_likelihoods": lambda: m.state_cross_likelihoods(x, mask),
        "ARHMM.simulate": lambda: m.simulate(2, 20, key=key),
        "gibbs_step": lambda: ae.gibbs_step(key, m, x, mask),
        "run_chain": lambda: ae.run_chain(key, m, x, mask, 2),
        "run_chain/start_iter": lambda: ae.run_chain(key, m, x, mask, 2, start_iter=4),
        "run_chain/thin": lambda: ae.run_chain(key, m, x, mask, 2, thin=1),
        "ARHMM.check": lambda: m.check(),
        "init_chains": lambda: ae.init_chains(hp, x, mask, key=key, num_chains=2),
        "run_chains": lambda: ae.run_chains(key, p["chains"], x, mask, 2),
        "fit_em": lambda: ae.fit_em(m, x, mask, max_iters=2),
    }


COMPAT_CASES = [
    "init_hyperparams", "init_ar_params", "init_params", "init_states", "init_model", "init_model/states given",
    "init_model/from dicts", "resample_discrete_stateseqs", "stateseq_marginals", "stateseq_mode",
    "resample_ar_params", "resample_hdp_transitions", "resample_model", "resample_model/states_only",
    "resample_model/new kappa", "discrete_stateseq_log_prob", "continuous_stateseq_log_prob",
    "log_joint_likelihood", "model_likelihood", "state_cross_likelihoods", "marginal_log_likelihood",
    "generate_states", "generate_states/init_state", "model_from_dict", "model_to_dict",
]
NATIVE_CASES = [
    "ARHMM.from_prior", "ARHMM.from_params", "ARHMM.resample", "ARHMM.log_joint_likelihood",
    "ARHMM.marginal_log_likelihood", "ARHMM.stateseq_marginals", "ARHMM.most_likely_states", "ARHMM.log_prior",
    "ARHMM.log_posterior", "ARHMM.state_cross_likelihoods", "ARHMM.simulate", "gibbs_step", "run_chain",
    "run_chain/start_iter", "run_chain/thin", "ARHMM.check", "init_chains", "run_chains", "fit_em",
]
NO_PROGRAM = ("init_hyperparams", "model_from_dict", "model_to_dict", "ARHMM.check")


def test_every_compat_function_and_arhmm_method_has_a_case(problem):
    assert set(_compat_cases(problem)) == set(COMPAT_CASES)
    assert set(_native_cases(problem)) == set(NATIVE_CASES)
    covered = {case.split("/")[0] for case in COMPAT_CASES}
    for module in (initialize, gibbs, log_prob, generate, compat):
        public = {n for n, f in vars(module).items() if not n.startswith("_") and inspect.isfunction(f)}
        assert not public - covered, f"no warm-call case for {module.__name__}: {sorted(public - covered)}"
    methods = {
        f"ARHMM.{n}" for n, f in vars(ae.ARHMM).items()
        if not n.startswith("_") and (callable(f) or isinstance(f, classmethod))
    }
    assert not methods - set(NATIVE_CASES), sorted(methods - set(NATIVE_CASES))


def _warm_programs(recorder, thunk) -> list[str]:
    names = recorder.warm(thunk)
    assert len(names) <= 1, f"a warm call ran {len(names)} programs (eager dispatch?): {names}"
    return names


@pytest.mark.parametrize("name", COMPAT_CASES)
def test_compat_warm_call_is_one_program(recorder, problem, name):
    names = _warm_programs(recorder, _compat_cases(problem)[name])
    if name in NO_PROGRAM:
        assert names == []  # building or converting dicts runs no program at all
    else:
        assert len(names) == 1


@pytest.mark.parametrize("name", NATIVE_CASES)
def test_native_warm_call_is_one_program(recorder, problem, name):
    names = _warm_programs(recorder, _native_cases(problem)[name])
    assert len(names) == (0 if name in NO_PROGRAM else 1)  # validating a model runs none
