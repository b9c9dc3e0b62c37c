"""PAA's Gaussian mixture (harness/detectors/mixture.py) gives scikit-learn's values bit for bit."""

import warnings

import numpy as np
import pytest
import sklearn.mixture as skm
from sklearn.exceptions import ConvergenceWarning

from harness.detectors import mixture


def _paa_fit(cls, scores, **kwargs):
    """A fit as mmdet's PAAHead.paa_reassign makes it: sorted float32 column, min/max means, unit precisions."""
    x = np.sort(np.asarray(scores, dtype=np.float32)).reshape(-1, 1)
    gmm = cls(2, weights_init=np.array([0.5, 0.5]), means_init=np.array([x.min(), x.max()]).reshape(2, 1),
              precisions_init=np.array([1.0, 1.0]).reshape(2, 1), covariance_type="diag", **kwargs)
    gmm.fit(x)
    return gmm, x


def _outcome(cls, scores, **kwargs):
    """Everything PAA reads of a fit, and what a fit leaves; or the error it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gmm, x = _paa_fit(cls, scores, **kwargs)
        except ValueError as exc:
            return ("error", str(exc))
        return (gmm.weights_.tobytes(), gmm.means_.tobytes(), gmm.covariances_.tobytes(),
                gmm.precisions_cholesky_.tobytes(), gmm.precisions_.tobytes(), gmm.n_iter_, gmm.converged_,
                float(gmm.lower_bound_), gmm.predict(x).tolist(), gmm.score_samples(x).tobytes(),
                [w.category for w in caught if issubclass(w.category, ConvergenceWarning)])


def _inputs(rng):
    """PAA-like candidate scores: a few to 45 values, two clusters or one, ties, wide and narrow ranges."""
    n = int(rng.integers(2, 46))
    kind = rng.integers(0, 5)
    if kind == 0:
        return rng.random(n) * rng.choice([0.01, 1.0, 10.0])
    if kind == 1:
        low = rng.normal(0.3, 0.05, n // 2 + 1)
        return np.concatenate([low, rng.normal(1.5, 0.3, n - len(low))])
    if kind == 2:  # ties: several candidates scoring the same
        return rng.choice(rng.random(3) * 2, n)
    if kind == 3:
        return rng.exponential(1.0, n) + 0.05
    return np.concatenate([np.full(n - 1, rng.random()), [rng.random() + 1.0]])  # collapsed + one outlier


def test_fit_predict_and_scores_equal_sklearn_bit_for_bit():
    rng = np.random.default_rng(0)
    errors = 0
    for _ in range(1500):
        scores = _inputs(rng)
        expected = _outcome(skm.GaussianMixture, scores)
        assert _outcome(mixture.GaussianMixture, scores) == expected, scores
        errors += expected[0] == "error"
    assert errors > 0  # collapsed inputs did reach scikit-learn's ValueError, and this class raised it alike


def test_float64_data_and_other_settings_equal_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(200):
        scores = rng.random(int(rng.integers(2, 30)))
        for kwargs in ({"tol": 1e-6}, {"max_iter": 2}, {"reg_covar": 1e-3}):
            x = np.sort(scores).reshape(-1, 1)  # float64
            fits = []
            for cls in (skm.GaussianMixture, mixture.GaussianMixture):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    gmm = cls(2, weights_init=np.array([0.5, 0.5]), means_init=np.array([x.min(), x.max()]).reshape(2, 1),
                              precisions_init=np.ones((2, 1)), covariance_type="diag", **kwargs).fit(x)
                fits.append((gmm.means_.tobytes(), gmm.covariances_.tobytes(), gmm.n_iter_, gmm.converged_,
                             gmm.predict(x).tolist(), gmm.score_samples(x).tobytes()))
            assert fits[0] == fits[1], (scores, kwargs)


def test_the_fit_is_computed_here_only_where_it_is_exact():
    x = np.sort(np.random.default_rng(2).random(12).astype(np.float32)).reshape(-1, 1)
    here, _ = _paa_fit(mixture.GaussianMixture, x.ravel())
    assert here._fitted_here
    for kwargs in ({"covariance_type": "full", "precisions_init": np.ones((2, 1, 1))}, {"n_init": 2},
                   {"precisions_init": None}):
        args = {"weights_init": np.array([0.5, 0.5]), "means_init": np.array([[x.min()], [x.max()]]),
                "precisions_init": np.ones((2, 1)), "covariance_type": "diag", **kwargs}
        gmm = mixture.GaussianMixture(2, **args).fit(x)
        assert not gmm._fitted_here
        assert gmm.predict(x).tolist() == skm.GaussianMixture(2, **args).fit(x).predict(x).tolist()
    with pytest.raises(ValueError, match="NaN"):  # scikit-learn's own message
        mixture.GaussianMixture(2, weights_init=np.array([0.5, 0.5]), means_init=np.array([[0.0], [1.0]]),
                                precisions_init=np.ones((2, 1))).fit(np.array([[0.1], [np.nan], [0.5]], np.float32))


def test_robust_mixture_refits_a_collapsed_fit_and_leaves_others():
    """Six candidates scoring exactly the same and one outlier make scikit-learn's fit fail; the PAA heads'
    mixture refits with a larger regulariser, and leaves ordinary fits as scikit-learn makes them."""
    collapsed = [4.5161767] * 6 + [5.668637]
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        _paa_fit(skm.GaussianMixture, collapsed)
    gmm, x = _paa_fit(mixture.RobustGaussianMixture, collapsed)
    assert gmm.reg_covar == 1e-3 and gmm.predict(x).tolist() == [0] * 6 + [1]
    ordinary = [0.3, 0.35, 0.4, 1.2, 1.3, 1.25]
    plain, x = _paa_fit(skm.GaussianMixture, ordinary)
    gmm, _ = _paa_fit(mixture.RobustGaussianMixture, ordinary)
    assert gmm.reg_covar == 1e-6 and gmm.predict(x).tolist() == plain.predict(x).tolist()


def test_every_paa_head_fits_with_the_harness_mixture():
    import harness.detectors.dense_heads  # noqa: F401 - installs it
    from mmdet.models.dense_heads import paa_head  # mmdet's PAAHead (CE, Focal cells) reads this module's skm

    assert paa_head.skm.harness_robust and paa_head.skm.GaussianMixture is mixture.RobustGaussianMixture
