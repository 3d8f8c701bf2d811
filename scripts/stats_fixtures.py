#!/usr/bin/env python3
"""Reference values for crates/modelgate-rollout/src/analysis.rs and stats.rs.

Writes crates/modelgate-rollout/tests/fixtures/stats.json, checked by
crates/modelgate-rollout/tests/stats_fixtures.rs.

    python3 -m venv .cache/venv-stats
    .cache/venv-stats/bin/pip install -r scripts/stats-requirements.txt
    .cache/venv-stats/bin/python scripts/stats_fixtures.py

Deterministic: fixed seeds, fixed inputs. Conventions follow analysis.rs:
differences are "2 - 1" (candidate - champion).
"""
import json
import math
import pathlib

import numpy as np
import scipy
from scipy import stats

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/modelgate-rollout/tests/fixtures/stats.json"


def welch(mean1, var1, n1, mean2, var2, n2, alpha):
    # scipy tests "first - second": pass the candidate first to get t for 2 - 1.
    r = stats.ttest_ind_from_stats(mean2, math.sqrt(var2), n2, mean1, math.sqrt(var1), n1, equal_var=False)
    v1, v2 = var1 / n1, var2 / n2
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1))
    half = stats.t.ppf(1 - alpha / 2, df) * se
    diff = mean2 - mean1
    return dict(
        input=dict(mean1=mean1, var1=var1, n1=n1, mean2=mean2, var2=var2, n2=n2, alpha=alpha),
        t=float(r.statistic), df=df, p_value=float(r.pvalue), diff=diff,
        ci_low=diff - half, ci_high=diff + half,
    )


def two_prop(x1, n1, x2, n2, alpha):
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    half = stats.norm.ppf(1 - alpha / 2) * se
    return dict(
        input=dict(x1=x1, n1=n1, x2=x2, n2=n2, alpha=alpha),
        z=z, p_value=float(2 * stats.norm.sf(abs(z))), diff=p2 - p1,
        ci_low=p2 - p1 - half, ci_high=p2 - p1 + half,
    )


def mwu(a, b):
    a, b = list(map(float, a)), list(map(float, b))
    r = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
    return dict(input=dict(a=a, b=b), u=float(r.statistic), p_value=float(r.pvalue))


def srm(observed, weights):
    obs = np.asarray(observed, dtype=float)
    w = np.asarray(weights, dtype=float)
    r = stats.chisquare(obs, f_exp=w / w.sum() * obs.sum())
    return dict(
        input=dict(observed=list(observed), weights=list(weights)),
        chi2=float(r.statistic), df=len(observed) - 1, p_value=float(r.pvalue),
        mismatch=bool(r.pvalue < 0.001),
    )


EPS = 1e-4


def psi_counts(e_counts, a_counts):
    e = np.asarray(e_counts, dtype=float)
    a = np.asarray(a_counts, dtype=float)
    e = np.where(e == 0, EPS, e / e.sum())
    a = np.where(a == 0, EPS, a / a.sum())
    return float(np.sum((a - e) * np.log(a / e)))


def psi_samples(expected, actual, bins):
    expected = np.asarray(expected, dtype=float)
    actual = np.asarray(actual, dtype=float)
    edges = np.quantile(expected, np.arange(1, bins) / bins, method="linear")
    edges = np.unique(edges)  # merge duplicate edges
    e_counts = np.bincount(np.searchsorted(edges, expected, side="left"), minlength=len(edges) + 1)
    a_counts = np.bincount(np.searchsorted(edges, actual, side="left"), minlength=len(edges) + 1)
    value = psi_counts(e_counts, a_counts)
    return dict(
        input=dict(expected=expected.tolist(), actual=actual.tolist(), bins=bins),
        edges=edges.tolist(), expected_counts=e_counts.tolist(), actual_counts=a_counts.tolist(), value=value,
    )


def msprt(d, sigma2, n, tau2, alpha):
    v = 2 * sigma2
    log_lambda = 0.5 * np.log(v / (v + n * tau2)) + n * n * tau2 * d * d / (2 * v * (v + n * tau2))
    p = min(1.0, float(np.exp(-log_lambda)))
    return dict(
        input=dict(mean_diff=d, var_pooled_per_obs=sigma2, n_per_arm=n, tau2=tau2, alpha=alpha),
        log_lambda=float(log_lambda), p_value=p, reject=bool(p <= alpha),
    )


def sequential_diff(d, s2, tau2, alpha):
    # Written independently of analysis.rs: the Gaussian mixture likelihood
    # ratio integrated numerically, and the confidence sequence by bisection
    # on the test's own acceptance region.
    from scipy import integrate, optimize
    def lam(theta0):
        f = lambda th: stats.norm.pdf(d, th, math.sqrt(s2)) * stats.norm.pdf(th, theta0, math.sqrt(tau2))
        # Integrate around the integrand's peak (the posterior mean of θ).
        prec = 1 / s2 + 1 / tau2
        m, sd = (d / s2 + theta0 / tau2) / prec, math.sqrt(1 / prec)
        num, _ = integrate.quad(f, m - 40 * sd, m + 40 * sd, limit=400, epsabs=0, epsrel=1e-12)
        return num / stats.norm.pdf(d, theta0, math.sqrt(s2))
    log_lambda = math.log(lam(0.0))
    bound = math.log(1 / alpha)
    # The CS is symmetric around d; find the half-width h with log Λ(d ± h) = ln(1/α).
    g = lambda h: math.log(lam(d + h)) - bound
    h = optimize.brentq(g, 0.0, 12 * math.sqrt(s2 + tau2), xtol=1e-14, rtol=1e-12)
    return dict(
        input=dict(diff=d, var_of_diff=s2, tau2=tau2, alpha=alpha),
        log_lambda=log_lambda, p_value=min(1.0, math.exp(-log_lambda)), ci_low=d - h, ci_high=d + h,
    )


def mean_interval(mean, var, n, alpha):
    lo, hi = stats.t.interval(1 - alpha, n - 1, loc=mean, scale=math.sqrt(var / n))
    return dict(input=dict(mean=mean, variance=var, n=n, alpha=alpha), ci_low=float(lo), ci_high=float(hi))


def ss_means(alpha, power, sigma2, mde):
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    raw = 2 * z * z * sigma2 / mde**2
    return dict(input=dict(alpha=alpha, power=power, sigma2=sigma2, mde=mde), raw=raw, n=math.ceil(raw))


def ss_props(alpha, power, p1, p2):
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    pbar = (p1 + p2) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    raw = num * num / (p1 - p2) ** 2
    return dict(input=dict(alpha=alpha, power=power, p1=p1, p2=p2), raw=raw, n=math.ceil(raw))


def main():
    rng = np.random.default_rng(20240601)
    r = lambda x: [round(float(v), 6) for v in x]  # short, exact-in-JSON inputs

    welch_cases = [
        welch(10.0, 4.0, 30, 11.0, 9.0, 45, 0.05),
        welch(0.25, 0.01, 12, 0.21, 0.04, 7, 0.05),
        welch(100.0, 400.0, 1000, 101.5, 625.0, 250, 0.05),
        welch(5.0, 1.0, 2, 7.0, 3.0, 3, 0.05),
        welch(1.0, 2.0, 50, 1.0, 2.0, 50, 0.05),
        welch(3.2, 1.5, 20, 2.9, 0.2, 200, 0.01),
        welch(0.0, 1.0, 200000, 0.01, 1.0, 150000, 0.05),
        welch(42.0, 10.0, 8, 30.0, 12.0, 9, 0.1),
    ]
    zcases = [
        two_prop(100, 1000, 120, 1000, 0.05),
        two_prop(30, 5000, 55, 4800, 0.05),
        two_prop(1, 20, 8, 25, 0.05),
        two_prop(500, 1000, 500, 1000, 0.05),
        two_prop(2000, 100000, 1900, 20000, 0.01),
        two_prop(0, 50, 5, 60, 0.1),
    ]
    mwu_cases = [
        mwu([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]),
        mwu([1, 2, 2, 3, 3, 3, 4], [2, 3, 4, 4, 5, 5]),  # ties
        mwu([0, 0, 0, 1, 1], [0, 1, 1, 1, 1, 1]),  # heavy ties
        mwu(r(rng.normal(0, 1, 40)), r(rng.normal(0.5, 1, 35))),
        mwu(r(rng.exponential(1.0, 60)), r(rng.exponential(1.3, 80))),
        mwu(np.round(rng.normal(10, 3, 50)).tolist(), np.round(rng.normal(11, 3, 45)).tolist()),  # ties
        mwu([3.0], [1.0, 2.0, 4.0]),
        mwu([1, 2, 3], [1, 2, 3]),
    ]
    srm_cases = [
        srm([5000, 5000], [50, 50]),
        srm([5100, 4900], [0.5, 0.5]),
        srm([5300, 4700], [1, 1]),  # flagged
        srm([9050, 950], [90, 10]),
        srm([9300, 700], [90, 10]),  # flagged
        srm([3400, 3300, 3300], [1, 1, 1]),
        srm([1000, 1000, 1300], [1, 1, 1]),  # flagged
        srm([10, 0], [1, 1]),
    ]
    base = r(rng.normal(0, 1, 200))
    psi_cases = [
        psi_samples(base, base, 10),
        psi_samples(base, r(rng.normal(0, 1, 150)), 10),
        psi_samples(base, r(rng.normal(0.3, 1, 150)), 10),
        psi_samples(base, r(rng.normal(1.0, 1.2, 150)), 10),
        psi_samples(base, r(rng.normal(0, 1, 150)), 5),
        psi_samples(np.round(rng.exponential(2.0, 150)).tolist(), np.round(rng.exponential(3.0, 150)).tolist(), 10),
        psi_samples(base, r(rng.normal(5.0, 1, 50)), 10),  # empty bins -> epsilon
    ]
    psi_count_cases = [
        dict(expected_counts=e, actual_counts=a, value=psi_counts(e, a))
        for e, a in [
            ([100, 100, 100, 100], [100, 100, 100, 100]),
            ([10, 20, 30, 40], [40, 30, 20, 10]),
            ([50, 0, 50], [30, 10, 60]),
            ([25, 25, 25, 25, 0], [0, 20, 30, 25, 25]),
        ]
    ]
    msprt_cases = [
        msprt(0.0, 1.0, 100, 0.01, 0.05),
        msprt(0.1, 1.0, 1000, 0.01, 0.05),
        msprt(0.2, 1.0, 1000, 0.04, 0.05),
        msprt(-0.05, 0.5, 5000, 0.001, 0.05),
        msprt(3.0, 100.0, 250, 1.0, 0.01),
        msprt(0.02, 1.0, 100000, 0.01, 0.05),
        msprt(0.5, 2.0, 10, 0.25, 0.1),
    ]
    seq_cases = [
        sequential_diff(0.0, 0.01, 0.01, 0.05),
        sequential_diff(0.3, 0.01, 0.04, 0.05),
        sequential_diff(-0.02, 1e-4, 1e-4, 0.05),
        sequential_diff(1.5, 0.25, 1.0, 0.01),
        sequential_diff(0.004, 2e-6, 1e-4, 0.05),
        sequential_diff(0.2, 0.5, 0.05, 0.1),
    ]
    interval_cases = [mean_interval(*c) for c in [(10.0, 4.0, 30, 0.05), (0.3, 0.21, 500, 0.05), (-2.0, 9.0, 3, 0.01), (1.0, 1e-6, 10, 0.05), (5.5, 2.5, 100000, 0.1)]]
    ssm = [ss_means(*c) for c in [(0.05, 0.8, 1.0, 0.1), (0.05, 0.9, 1.0, 0.25), (0.01, 0.8, 4.0, 0.3), (0.1, 0.95, 2.5, 0.05), (0.05, 0.8, 0.3, 0.07)]]
    ssp = [ss_props(*c) for c in [(0.05, 0.8, 0.10, 0.15), (0.05, 0.9, 0.2, 0.3), (0.01, 0.8, 0.02, 0.025), (0.1, 0.8, 0.5, 0.55), (0.05, 0.95, 0.01, 0.012)]]

    doc = dict(
        generator="scripts/stats_fixtures.py",
        versions=dict(numpy=np.__version__, scipy=scipy.__version__),
        psi_epsilon=EPS,
        welch=welch_cases, two_proportion=zcases, mann_whitney=mwu_cases, srm=srm_cases,
        psi=psi_cases, psi_from_counts=psi_count_cases, msprt=msprt_cases, sequential_diff=seq_cases, mean_interval=interval_cases,
        sample_size_means=ssm, sample_size_proportions=ssp,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=None, separators=(",", ":")).replace("},{", "},\n{") + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
