"""PAA's Gaussian mixture: scikit-learn's fit, value for value, without its per-call overhead.

PAA (mmdet's ``PAAHead.paa_reassign``, every PAA cell) fits, for every ground truth of every image of every
training iteration, a two-component mixture to the scores of its candidate anchors: ``sklearn.mixture.
GaussianMixture(2, weights_init=[0.5, 0.5], means_init=[min, max], precisions_init=[1, 1],
covariance_type='diag')`` on a float32 column of at most ``topk x levels`` values, then ``predict`` and
``score_samples``. On such a handful of numbers scikit-learn's EM is a few microseconds of arithmetic
inside about 2 ms of input validation and dispatch (measured: 2.1 ms a fit of 27 values, 3 EM steps):
a quarter of a PAA training step at the tiny profile, and on a cluster 30 such fits an iteration (4
images x 7 objects) for the CPU to do while the GPU waits.

:class:`GaussianMixture` is scikit-learn's class with ``fit``, ``predict`` and ``score_samples`` done here
when every initial value is given, the covariance is ``'diag'`` and one initialisation is asked for (what
PAA passes); anything else goes to scikit-learn unchanged. What is done here is scikit-learn's algorithm
(scikit-learn 1.9, ``sklearn/mixture/_base.py`` and ``_gaussian_mixture.py``) with its operations in its
order and dtypes (the data stays float32, the parameters float64), so the fitted parameters, the number
of EM steps, the labels and the log-likelihoods are scikit-learn's bit for bit
(``tests/test_mixture.py``, over thousands of random and degenerate inputs):

* start: ``weights = weights_init``, ``means = means_init``, ``precisions_chol = sqrt(precisions_init)``
  (given every initial value, scikit-learn runs no k-means and draws no random number);
* E step: ``log p(x, k) = -1/2 (d log 2 pi + sum_f (mu_kf^2 P_kf - 2 x_f mu_kf P_kf + x_f^2 P_kf)) +
  sum_f log sqrt(P_kf) + log w_k`` with ``P = precisions_chol^2``; ``log p(x) = logsumexp_k``;
  responsibilities ``log r = log p(x, k) - log p(x)``; the lower bound is the mean of ``log p(x)``;
* M step: ``n_k = sum r + 10 eps``, ``mu_k = r_k . x / n_k``, ``var_k = r_k . x^2 / n_k - mu_k^2 +
  reg_covar``, ``w = n / sum n``; a variance <= 0 raises scikit-learn's ValueError ("ill-defined empirical
  covariance"), and non-finite data its ValueError too;
* stop when the lower bound moves by less than ``tol`` (else after ``max_iter`` steps, with
  scikit-learn's ConvergenceWarning).

The harness's PAA heads use it through :func:`robust_module`, which also refits a collapsed fit with a
larger regulariser (see there).
"""

from __future__ import annotations

import math
import types
import warnings

import numpy as np
import sklearn.mixture as skm

_FAILED = ("Fitting the mixture model failed because some components have ill-defined empirical covariance "
           "(for instance caused by singleton or collapsed samples). Try to decrease the number of components, "
           "increase reg_covar, or scale the input data.")


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """scikit-learn's ``_logsumexp(a, axis=1)`` (itself scipy's), operation for operation."""
    a_max = a.max(axis=1, keepdims=True)
    at_max = a == a_max
    a = a.copy()
    a[at_max] = -np.inf
    m = at_max.astype(a.dtype).sum(axis=1, keepdims=True, dtype=a.dtype)
    shift = np.where(np.isfinite(a_max), a_max, 0)
    s = np.exp(a - shift).sum(axis=1, keepdims=True, dtype=a.dtype)
    s = np.where(s == 0, s, s / m)
    return np.squeeze(np.log1p(s) + np.log(m) + a_max, axis=1)


def _weighted_log_prob(x: np.ndarray, weights, means, precisions_chol) -> np.ndarray:
    """``log p(x | k) + log w_k`` for diagonal covariances (scikit-learn's ``_estimate_log_gaussian_prob``
    plus ``_estimate_log_weights``)."""
    n_features = x.shape[1]
    log_det = np.log(precisions_chol).sum(axis=1)
    precisions = precisions_chol ** 2
    log_prob = ((means ** 2 * precisions).sum(axis=1) - 2.0 * (x @ (means * precisions).T)
                + (x ** 2 @ precisions.T))
    return (-0.5 * (n_features * math.log(2 * math.pi) + log_prob) + log_det) + np.log(weights)


class GaussianMixture(skm.GaussianMixture):
    """scikit-learn's GaussianMixture; ``fit``, ``predict`` and ``score_samples`` computed here (the same
    values, see the module docstring) when every initial value is given, the covariance is diagonal and
    ``n_init`` is 1 without warm start; otherwise scikit-learn's own."""

    def _exact_inputs(self, X):
        """``(x, weights, means, precisions)`` as scikit-learn would hold them, when this class computes the
        fit: every initial value given, in the dtypes PAA passes, with valid shapes and values, finite data;
        else None (scikit-learn's own fit then runs, with its own checks and messages)."""
        if not (self.covariance_type == "diag" and self.n_init == 1 and not self.warm_start and self.max_iter >= 1
                and self.weights_init is not None and self.means_init is not None
                and self.precisions_init is not None):
            return None
        x, weights = np.asarray(X), np.asarray(self.weights_init)
        means, precisions = np.asarray(self.means_init), np.asarray(self.precisions_init)
        if (x.ndim != 2 or x.dtype not in (np.float32, np.float64) or weights.dtype != np.float64
                or means.dtype not in (np.float32, np.float64) or precisions.dtype != np.float64):
            return None
        n_samples, n_features = x.shape
        if (n_samples < max(2, self.n_components) or weights.shape != (self.n_components,)
                or means.shape != (self.n_components, n_features)
                or precisions.shape != (self.n_components, n_features)
                or not np.isfinite(x).all() or not np.isfinite(means).all()
                or (weights < 0).any() or (weights > 1).any() or (precisions <= 0).any()
                or not abs(1.0 - float(weights.sum())) <= 1e-8):  # scikit-learn's normalisation check
            return None
        return x, weights, means, precisions

    def fit(self, X, y=None):
        inputs = self._exact_inputs(X)
        self._fitted_here = False
        if inputs is None:
            return super().fit(X, y)
        x, weights, means, precisions = inputs
        n_features = x.shape[1]
        precisions_chol = np.sqrt(precisions)
        covariances = None
        lower_bound, bounds, converged, n_iter = -np.inf, [], False, 0
        for n_iter in range(1, self.max_iter + 1):
            previous = lower_bound
            weighted = _weighted_log_prob(x, weights, means, precisions_chol)
            log_prob_norm = _logsumexp_rows(weighted)
            with np.errstate(under="ignore"):
                log_resp = weighted - log_prob_norm[:, np.newaxis]
            resp = np.exp(log_resp)
            nk = resp.sum(axis=0) + 10 * np.finfo(resp.dtype).eps
            means = (resp.T @ x) / nk[:, np.newaxis]
            covariances = (resp.T @ (x * x)) / nk[:, np.newaxis] - means ** 2 + self.reg_covar
            weights = nk / nk.sum()
            if (covariances <= 0.0).any():
                raise ValueError(_FAILED + (" The numerical accuracy can also be improved by passing float64"
                                            " data instead of float32." if covariances.dtype == np.float32 else ""))
            precisions_chol = 1.0 / np.sqrt(covariances)
            lower_bound = log_prob_norm.mean()
            bounds.append(lower_bound)
            if abs(lower_bound - previous) < self.tol:
                converged = True
                break
        if not converged and self.max_iter > 0:
            from sklearn.exceptions import ConvergenceWarning

            warnings.warn("Best performing initialization did not converge. Try different init parameters, or "
                          "increase max_iter, tol, or check for degenerate data.", ConvergenceWarning)
        self.weights_, self.means_, self.covariances_ = weights, means, covariances
        self.precisions_cholesky_, self.precisions_ = precisions_chol, precisions_chol ** 2
        self.converged_, self.n_iter_, self.lower_bound_, self.lower_bounds_ = converged, n_iter, lower_bound, bounds
        self.n_features_in_ = n_features
        self._fitted_here = True
        return self

    def predict(self, X):
        x = self._data_here(X)
        if x is None:
            return super().predict(X)
        return np.argmax(_weighted_log_prob(x, self.weights_, self.means_, self.precisions_cholesky_), axis=1)

    def score_samples(self, X):
        x = self._data_here(X)
        if x is None:
            return super().score_samples(X)
        return _logsumexp_rows(_weighted_log_prob(x, self.weights_, self.means_, self.precisions_cholesky_))

    def _data_here(self, X):
        """``X`` when this class fitted the mixture and ``X`` is finite float data of its width, else None."""
        if not getattr(self, "_fitted_here", False):
            return None
        x = np.asarray(X)
        if (x.ndim != 2 or x.dtype not in (np.float32, np.float64) or x.shape[1] != self.n_features_in_
                or not np.isfinite(x).all()):
            return None
        return x


class RobustGaussianMixture(GaussianMixture):
    """:class:`GaussianMixture` that survives collapsed samples.

    PAA fits a two-component mixture to each ground truth's candidate anchor scores. Early in training
    (from scratch, or with a loss whose scores barely move) several candidates can score exactly the same
    and the rest be a single sample; the fit then fails with "ill-defined empirical covariance". The
    refit uses the remedy the error message names, a larger covariance regulariser (1e-3 instead of
    1e-6, small next to scores of order 0.1 to 1), and leaves every other fit unchanged."""

    def fit(self, X, y=None):
        try:
            return super().fit(X, y)
        except ValueError:
            if self.reg_covar >= 1e-3:
                raise
            self.reg_covar = 1e-3
            return super().fit(X, y)


def robust_module() -> types.SimpleNamespace:
    """``sklearn.mixture`` as mmdet's PAA head uses it (``skm.GaussianMixture``): :class:`RobustGaussianMixture`."""
    return types.SimpleNamespace(GaussianMixture=RobustGaussianMixture, harness_robust=True)
