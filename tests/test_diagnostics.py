"""Diagnostics across chains: split R-hat against its exact F distribution, ESS against the closed form
of an AR(1) chain, ARI against brute-force pair counting, VI identities, and the EML score matrix."""

import itertools

import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest
import scipy.signal
import scipy.stats
from helpers import SMALL_SIZES, small_walk

import arhmm_eqx as ae


K, D, L, N, T = SMALL_SIZES


def _ar1(rng, phi, C, S):
    """Stationary AR(1) chains with unit marginal variance: integrated autocorrelation time (1+phi)/(1-phi)."""
    e = rng.normal(size=(C, S))
    e[:, 0] /= np.sqrt(1 - phi**2)  # start in the stationary distribution
    return scipy.signal.lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], e, axis=1)


def test_split_rhat_matches_its_exact_distribution_for_iid_chains():
    """For C chains of S iid normal draws, n R^2 - (n - 1) = n Var(half means) / W is exactly
    F(m - 1, m (n - 1)) with m = 2C half-chains of length n = S/2. Kolmogorov-Smirnov over 400 draws."""
    rng = np.random.default_rng(0)
    C, S = 4, 200
    n, m = S // 2, 2 * C
    rhat = np.array([ae.workflow.split_rhat(rng.normal(size=(C, S))) for _ in range(400)])
    stat = n * rhat**2 - (n - 1)
    assert scipy.stats.kstest(stat, scipy.stats.f(m - 1, m * (n - 1)).cdf).pvalue > 1e-3
    # so a single R-hat from one distribution lies inside the F interval at level 1e-4
    lo, hi = scipy.stats.f(m - 1, m * (n - 1)).ppf([5e-5, 1 - 5e-5])
    assert np.sqrt((n - 1 + lo) / n) < rhat[0] < np.sqrt((n - 1 + hi) / n) < 1.05


def test_split_rhat_is_large_for_chains_stuck_apart_or_drifting():
    rng = np.random.default_rng(1)
    C, S = 4, 200
    apart = rng.normal(size=(C, S)) + 3.0 * np.arange(C)[:, None]  # each chain stuck in its own mode
    # n Var(means)/W ~ 2 * var(0, 3, 6, 9) * 100 / 1: R-hat about 3.4, far above the F bound above
    assert ae.workflow.split_rhat(apart) > 2.0
    drift = rng.normal(size=(1, S)) + np.linspace(0, 6, S)[None]  # one chain, not stationary
    assert ae.workflow.split_rhat(drift) > 1.5
    # vectorised over trailing axes, and constant traces
    both = np.stack([rng.normal(size=(C, S)), apart], axis=-1)
    out = ae.workflow.split_rhat(both)
    assert out.shape == (2,) and out[0] < 1.05 and out[1] > 2.0
    assert ae.workflow.split_rhat(np.ones((C, S))) == 1.0
    assert np.isinf(ae.workflow.split_rhat(np.arange(C)[:, None] * np.ones((C, S))))
    with pytest.raises(ValueError, match="traces"):
        ae.workflow.split_rhat(np.ones(10))


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_ess_of_ar1_chains_matches_closed_form(phi):
    """ESS = C S (1 - phi) / (1 + phi) for AR(1) chains. The mean estimate over 200 independent
    replicates is within 4 standard errors of it. (Geyer's truncation biases the estimate by a few
    percent at phi = 0, below these tolerances here: seen 0.3 % at 0.5, 1 % at 0.9.)"""
    rng = np.random.default_rng(2)
    C, S, reps = 4, 1000, 200
    truth = C * S * (1 - phi) / (1 + phi)
    est = np.array([ae.workflow.effective_sample_size(_ar1(rng, phi, C, S)) for _ in range(reps)])
    se = est.std(ddof=1) / np.sqrt(reps)
    assert abs(est.mean() - truth) < 4 * se
    assert se < 0.02 * truth  # the test has power: 4 SE is under 8 % of the truth


def test_ess_of_iid_and_constant_traces():
    rng = np.random.default_rng(3)
    ess = ae.workflow.effective_sample_size(rng.normal(size=(4, 500, 3)))
    assert ess.shape == (3,)
    assert np.all((ess > 0.8 * 2000) & (ess < 1.25 * 2000))
    assert ae.workflow.effective_sample_size(np.ones((2, 50))) == 100.0


def _ari_by_pairs(a, b):
    """ARI from an explicit loop over all pairs of frames."""
    n = len(a)
    both = same_a = same_b = 0
    for i, j in itertools.combinations(range(n), 2):
        sa, sb = a[i] == a[j], b[i] == b[j]
        both += sa and sb
        same_a += sa
        same_b += sb
    total = n * (n - 1) / 2
    expected = same_a * same_b / total
    return (both - expected) / (0.5 * (same_a + same_b) - expected)


def test_adjusted_rand_index_against_pair_counting_and_invariances():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 4, size=(2, 30))
    b = np.where(rng.random((2, 30)) < 0.7, a, rng.integers(0, 5, size=(2, 30)))  # a noisy copy
    valid = np.ones((2, 30), bool)
    valid[1, 20:] = False
    ari = ae.workflow.adjusted_rand_index(a, b, valid)
    assert ari == pytest.approx(_ari_by_pairs(a[valid], b[valid]), rel=1e-12)
    assert 0.2 < ari < 0.95
    perm = np.array([3, 0, 2, 1])
    assert ae.workflow.adjusted_rand_index(a, perm[a]) == pytest.approx(1.0)
    assert ae.workflow.adjusted_rand_index(a, b, valid) == pytest.approx(ae.workflow.adjusted_rand_index(b, a, valid))
    # masked frames are ignored whatever they hold
    b2 = b.copy()
    b2[~valid] = 7
    assert ae.workflow.adjusted_rand_index(a, b2, valid) == ari
    with pytest.raises(ValueError, match="valid"):
        ae.workflow.adjusted_rand_index(a, b, valid[0])


def test_variation_of_information_identities():
    i = np.arange(16)
    a, b = i // 4, i % 4  # independent uniform labelings: I = 0, so VI = H(A) + H(B) = 2 log 4
    assert ae.workflow.variation_of_information(a, b) == pytest.approx(2 * np.log(4))
    assert ae.workflow.variation_of_information(a, (a + 1) % 4) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(5)
    x, y, z = rng.integers(0, 3, size=(3, 50))
    vi = ae.workflow.variation_of_information
    assert vi(x, y) == pytest.approx(vi(y, x))
    assert vi(x, z) <= vi(x, y) + vi(y, z) + 1e-12  # a metric


def test_segmentation_agreement_matrix():
    rng = np.random.default_rng(6)
    z = rng.integers(0, 3, size=(3, 2, 20))
    z[1] = (z[0] + 1) % 3  # chain 1 is chain 0 relabeled
    ari = ae.workflow.segmentation_agreement(z)
    assert ari.shape == (3, 3) and np.allclose(ari, ari.T) and np.allclose(np.diag(ari), 1.0)
    assert ari[0, 1] == pytest.approx(1.0) and ari[0, 2] < 0.5
    vi = ae.workflow.segmentation_agreement(z, metric="vi")
    assert vi[0, 1] == pytest.approx(0.0, abs=1e-12) and vi[0, 2] > 0.5
    with pytest.raises(ValueError, match="metric"):
        ae.workflow.segmentation_agreement(z, metric="nmi")
    with pytest.raises(ValueError, match=r"shape \(C, N, Tz\)"):
        ae.workflow.segmentation_agreement(z[:, 0])


@pytest.fixture(scope="module")
def chains():
    x, mask = small_walk(N, T, D)
    hp = ae.hyperparams_grid(ae.Hyperparams.from_scales(K, D, L), kappa=jnp.array([1.0, 1e2, 1e6]))
    return ae.init_chains(hp, x, mask, key=jr.key(1)), x, mask


def test_eml_with_shared_data_is_each_chains_marginal_likelihood(chains):
    models, x, mask = chains
    eml = ae.workflow.expected_marginal_likelihoods(models, x, mask)
    alone = np.array([float(jtu.tree_map(lambda v: v[c], models).marginal_log_likelihood(x, mask))
                      for c in range(3)])
    np.testing.assert_allclose(eml.scores, alone, rtol=1e-5)
    np.testing.assert_allclose(eml.matrix, np.broadcast_to(alone[:, None], (3, 3)), rtol=1e-5)
    assert list(eml.ranking) == list(np.argsort(-alone))
    assert len(set(np.round(alone, 3))) == 3  # the chains differ, so the ranking means something


def test_eml_cross_matrix_with_per_chain_data(chains):
    """With per-chain trajectories, matrix[i, j] = log p(x_j | params_i) (checked against a double
    loop) and scores[i] the mean over j != i."""
    models, x, mask = chains
    xs = jnp.stack([x, x + 0.1, 1.2 * x])
    masks = jnp.stack([mask] * 3)
    eml = ae.workflow.expected_marginal_likelihoods(models, xs, masks)
    for i in range(3):
        m = jtu.tree_map(lambda v: v[i], models)
        for j in range(3):
            assert eml.matrix[i, j] == pytest.approx(float(m.marginal_log_likelihood(xs[j], mask)), rel=1e-5)
        assert eml.scores[i] == pytest.approx((eml.matrix[i].sum() - eml.matrix[i, i]) / 2)
    with pytest.raises(ValueError, match="leading axis"):
        ae.workflow.expected_marginal_likelihoods(models, xs[:2], masks[:2])
    with pytest.raises(ValueError, match="batched"):
        ae.workflow.expected_marginal_likelihoods(jtu.tree_map(lambda v: v[0], models), x, mask)
