#!/usr/bin/env python3
"""Reference values for the Go package statistics (statistics/*_test.go).

Regenerate with `make reference-values`; the Go tests read only
reference.json. Generated with:
    Python 3.11.7, scipy 1.17.1, statsmodels 0.15.0, numpy 2.4.6

Where SciPy/statsmodels return nan the value is written as null and the
Go test checks the documented Go behaviour instead. Functions without a
SciPy counterpart are mirrored here from their definition (marked
"mirror"), independently of the Go code:
  - HistogramQuantile: Prometheus' histogram_quantile rule;
  - the sequential tests: the one-sided normal-mixture mSPRT formula,
    with scipy.stats.norm.logcdf and scipy.optimize.brentq;
  - Mann-Whitney on histograms too large to expand (n >= 1e7): SciPy's
    asymptotic formula evaluated on the histogram; the expanded cases
    check the mirror against scipy.stats.mannwhitneyu itself.
"""
import json
import math
import os
import sys

import numpy as np
import scipy
import scipy.optimize
import scipy.stats as st
import statsmodels
from scipy.stats._stats_py import _unequal_var_ttest_denom
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)


def num(v):
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def ztests():
    cases = [
        (5, 500, 10, 500), (10, 1000, 5, 1000), (0, 100, 3, 100),
        (100, 100, 97, 100), (0, 1, 1, 1), (1, 1, 0, 1), (1, 1, 1, 2),
        (3, 17, 40, 1000), (123, 4567, 150, 4600),
        (10_133_500, 10**9, 10_000_000, 10**9),  # z ~ 30, p ~ 1e-198
        (10_000_000, 10**9, 10_000_000, 10**9),  # equal, huge n
        (11_000_000, 10**9, 10_000_000, 10**9),  # p underflows to 0
        (0, 100, 0, 100), (100, 100, 50, 50),  # pooled variance 0: nan
    ]
    out = []
    for x1, n1, x2, n2 in cases:
        r = {"x1": x1, "n1": n1, "x2": x2, "n2": n2}
        with np.errstate(all="ignore"):
            for alt, key in (("two-sided", "p_two_sided"), ("larger", "p_greater"), ("smaller", "p_less")):
                z, p = proportions_ztest([x1, x2], [n1, n2], alternative=alt)
                r["z"], r[key] = num(z), num(p)
        for alpha in (0.05, 0.01):
            lo, hi = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff", alpha=alpha)
            r["newcombe_%g" % alpha] = [num(lo), num(hi)]
            wl, wh = proportion_confint(x1, n1, alpha=alpha, method="wilson")
            r["wilson1_%g" % alpha] = [num(wl), num(wh)]
        out.append(r)
    return out


def welch():
    cases = [
        (10, 1.0, 4.0, 12, 2.0, 9.0),
        (2, 0.0, 1.0, 2, 5.0, 2.0),  # df small
        (1000, 0.251, 0.01, 1200, 0.249, 0.012),
        (50, 3.0, 2.0, 50, 3.0, 2.0),  # equal samples
        (30, 1.0, 0.0, 40, 1.5, 2.0),  # one variance 0
        (10**9, 0.2500012, 0.04, 10**9, 0.25, 0.04),  # huge n, t ~ 0.13
        (10**9, 0.25001, 0.04, 10**9, 0.25, 0.04),  # huge n, t ~ 1.1
        (10**9, 0.25, 0.04, 10**9, 0.25, 0.04),  # huge n, equal
        (3, 100.0, 1e-6, 200, 0.0, 1e4),
        (5, 1.0, 0.0, 7, 2.0, 0.0),  # both variances 0, t = -inf
        (5, 2.0, 0.0, 7, 2.0, 0.0),  # both variances 0, equal: nan
    ]
    # A sweep over df (n per arm, variance 1 in both) and t, to measure
    # how precision depends on df: the Go test logs it.
    for n in (10, 1000, 10**5, 10**6, 10**7, 10**8, 10**9):
        for t in (0.5, 3.0, 30.0):
            if t == 30.0 and n == 10:
                continue
            cases.append((n, t * math.sqrt(2.0 / n), 1.0, n, 0.0, 1.0))
    out = []
    for n1, m1, v1, n2, m2, v2 in cases:
        r = {"n1": n1, "mean1": m1, "var1": v1, "n2": n2, "mean2": m2, "var2": v2}
        with np.errstate(all="ignore"):
            for alt in ("two-sided", "greater", "less"):
                res = st.ttest_ind_from_stats(m1, math.sqrt(v1), n1, m2, math.sqrt(v2), n2, equal_var=False, alternative=alt)
                r["t"] = num(res.statistic)
                # ttest_ind_from_stats does not return df: take it from the
                # helper it uses itself.
                df, _ = _unequal_var_ttest_denom(np.float64(math.sqrt(v1))**2, np.float64(n1), np.float64(math.sqrt(v2))**2, np.float64(n2))
                r["df"] = num(df)
                r["p_" + alt.replace("-", "_")] = num(res.pvalue)
        out.append(r)
    return out


def srm_expected(windows):
    k = len(windows[0]["counts"])
    obs = [0] * k
    exp = [0.0] * k
    for w in windows:
        total = float(sum(w["counts"]))
        s = 0.0
        for wt in w["weights"]:
            s += wt
        for i in range(k):
            obs[i] += w["counts"][i]
        if total == 0:
            continue
        for i in range(k):
            exp[i] += total * w["weights"][i] / s
    return obs, exp


def srm():
    cases = [
        [{"counts": [10400, 9600], "weights": [50, 50]}],  # the 52/48 over 20,000 case
        [{"counts": [5020, 4980], "weights": [1, 1]}],
        [{"counts": [900, 100], "weights": [90, 10]}, {"counts": [500, 510], "weights": [50, 50]}],
        [{"counts": [700, 200, 100], "weights": [70, 20, 10]},
         {"counts": [400, 350, 0], "weights": [50, 50, 0]},
         {"counts": [0, 0, 0], "weights": [0, 0, 0]}],
        [{"counts": [1000, 0], "weights": [100, 0]}],  # one variant expected: df 0
        [{"counts": [1000, 1], "weights": [100, 0]}],  # traffic where 0 expected
        [{"counts": [600_000_000, 400_000_123], "weights": [0.6, 0.4]}],  # huge n
        [{"counts": [500_500_000, 499_500_000], "weights": [1, 1]}],  # p ~ 1e-217
        [{"counts": [1, 0], "weights": [1, 1]}],
        [{"counts": [3, 1, 2, 9], "weights": [0.25, 0.25, 0.25, 0.25]}],
    ]
    out = []
    for windows in cases:
        obs, exp = srm_expected(windows)
        r = {"windows": windows, "expected": exp}
        pos = [i for i in range(len(exp)) if exp[i] > 0]
        if any(obs[i] > 0 and exp[i] == 0 for i in range(len(exp))):
            r["chi2"], r["p"], r["df"] = "+Inf", 0.0, len(pos) - 1
        else:
            o = np.array([obs[i] for i in pos], dtype=float)
            e = np.array([exp[i] for i in pos], dtype=float)
            with np.errstate(all="ignore"):
                res = st.chisquare(o, e)
            r["chi2"], r["p"], r["df"] = num(res.statistic), num(res.pvalue), len(pos) - 1
        out.append(r)
    return out


def mwu_mirror(x, y):
    n1, n2 = float(sum(x)), float(sum(y))
    u = below = ties = 0.0
    for xi, yi in zip(x, y):
        u += xi * (below + 0.5 * yi)
        below += yi
        t = float(xi + yi)
        ties += t**3 - t
    n = n1 + n2
    s = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    mu = n1 * n2 / 2
    res = {"u": u}
    for alt, uu in (("greater", u), ("less", n1 * n2 - u), ("two_sided", max(u, n1 * n2 - u))):
        z = (uu - mu - 0.5) / s if s > 0 else -math.inf
        p = st.norm.sf(z) * (2 if alt == "two_sided" else 1)
        res["p_" + alt] = min(p, 1.0)
    return res


def mwu():
    cases = [
        ([5, 10, 3], [7, 8, 3]), ([0, 0, 10], [10, 0, 0]), ([4, 4], [4, 4]),
        ([7], [9]),  # single bucket
        ([1, 0, 0], [0, 0, 1]), ([0, 1], [5, 0]),  # n1 = 1
        ([30, 50, 15, 4, 1], [20, 50, 20, 8, 2]),
        ([3000, 5000, 1500, 400, 100], [2800, 5000, 1700, 400, 100]),
        ([20000, 50000, 20000, 8000, 2000], [30000, 50000, 15000, 4000, 1000]),  # z ~ 30
        ([0, 3, 0, 0, 2, 0], [1, 0, 4, 0, 0, 0]),
    ]
    huge = [
        ([300_000_000, 500_000_000, 150_000_000, 40_000_000, 10_000_000],
         [300_000_000, 500_000_000, 150_000_000, 40_000_000, 10_000_000]),
        ([299_900_000, 500_000_000, 150_000_000, 40_000_000, 10_100_000],
         [300_000_000, 500_000_000, 150_000_000, 40_000_000, 10_000_000]),
        ([290_000_000, 500_000_000, 160_000_000, 40_000_000, 10_000_000],
         [300_000_000, 500_000_000, 150_000_000, 40_000_000, 10_000_000]),
    ]
    out = []
    for x, y in cases:
        xs = np.repeat(np.arange(len(x)), x)
        ys = np.repeat(np.arange(len(y)), y)
        r = {"x": x, "y": y, "source": "scipy"}
        for alt in ("two-sided", "greater", "less"):
            res = st.mannwhitneyu(xs, ys, method="asymptotic", use_continuity=True, alternative=alt)
            r["u"] = num(res.statistic)
            r["p_" + alt.replace("-", "_")] = num(res.pvalue)
        m = mwu_mirror(x, y)
        for k in m:  # the mirror must agree with SciPy where both apply
            a, b = m[k], r[k]
            assert abs(a - b) <= 1e-12 * abs(b) or (a == 0 and b == 0), (x, y, k, a, b)
        out.append(r)
    for x, y in huge:
        r = {"x": x, "y": y, "source": "mirror"}
        r.update({k: num(v) for k, v in mwu_mirror(x, y).items()})
        out.append(r)
    return out


def prom_quantile(q, bounds, counts):
    """Prometheus histogram_quantile on per-bucket counts (mirror)."""
    cum, c = [], 0
    for n in counts:
        c += n
        cum.append(float(c))
    total = cum[-1]
    rank = q * total
    b = next(i for i in range(len(cum)) if cum[i] >= rank and counts[i] > 0)
    if math.isinf(bounds[b]):
        return bounds[b - 1]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = 0.0, cum[b]
    if b > 0:
        start = bounds[b - 1]
        count -= cum[b - 1]
        rank -= cum[b - 1]
    return start + (bounds[b] - start) * (rank / count)


def quantiles():
    inf = math.inf
    hists = [
        ([0.1, 0.25, 0.5, 1, 2.5, inf], [10, 40, 30, 15, 4, 1]),
        ([0.1, 0.25, 0.5, 1, 2.5, inf], [0, 0, 30, 0, 0, 5]),
        ([1.0], [7]),  # single bucket
        ([-1.0, 0.0, 1.0], [2, 2, 2]),
        ([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, inf],
         [123456789, 23456789, 3456789, 456789, 56789, 6789, 789, 89, 9, 1, 0, 0]),
    ]
    out = []
    for bounds, counts in hists:
        for q in (0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1):
            out.append({"q": q, "bounds": [num(b) for b in bounds], "counts": counts,
                        "value": num(prom_quantile(q, bounds, counts))})
    return out


def mix_log_lr(delta, v, tau):
    t2 = tau * tau
    u = delta * tau / math.sqrt(v * (v + t2))
    return 0.5 * math.log(v / (v + t2)) + math.log(2) + u * u / 2 + st.norm.logcdf(u)


def mix_threshold(v, tau, alpha):
    target = -math.log(alpha)
    hi = 1.0
    while mix_log_lr(hi, v, tau) < target:
        hi *= 2
    return scipy.optimize.brentq(lambda d: mix_log_lr(d, v, tau) - target, 0, hi, xtol=1e-300, rtol=1e-15, maxiter=500)


def smoothed_var(x, n):
    p = (x + 1) / (n + 2)
    return p * (1 - p) / n


def sequential():
    seqs = [
        (0.0, 0.05, [(0, 500, 0, 500), (3, 1000, 2, 1000), (12, 1500, 4, 1500), (25, 2000, 8, 2000), (40, 2500, 12, 2500)]),
        (0.005, 0.05, [(5, 500, 5, 500), (11, 1000, 10, 1000), (20, 1500, 15, 1500), (33, 2000, 20, 2000)]),
        (0.0, 0.01, [(1, 1, 0, 1), (2, 2, 0, 2), (50, 60, 0, 60)]),
        (0.0, 0.05, [(10_200_000, 10**9, 10_000_000, 10**9)]),  # huge n, p underflows
        (0.0, 0.05, [(10_140_000, 10**9, 10_000_000, 10**9)]),  # huge n, p ~ 1e-200
        (0.0, 0.05, [(9_000_000, 10**9, 10_000_000, 10**9)]),  # huge n, canary better
    ]
    out = []
    for margin, alpha, looks in seqs:
        minp, bound, rows = 1.0, -1.0, []
        for f1, n1, f2, n2 in looks:
            est = f1 / n1 - f2 / n2
            v = smoothed_var(f1, n1) + smoothed_var(f2, n2)
            ll = mix_log_lr(est - margin, v, 0.01)
            minp = min(minp, math.exp(-max(ll, 0)))
            bound = max(bound, est - mix_threshold(v, 0.01, alpha))
            rows.append({"counts": [f1, n1, f2, n2], "p": minp, "estimate": est, "lower": bound, "reject": minp <= alpha})
        out.append({"margin": margin, "alpha": alpha, "looks": rows})
    props = [
        (0.95, "less", 0.05, [(95, 100), (180, 200), (270, 300), (350, 400), (430, 500)]),
        (0.95, "greater", 0.05, [(100, 100), (199, 200), (1990, 2000), (9950, 10000)]),
        (0.5, "less", 0.01, [(0, 10), (1, 1000)]),
    ]
    for null, alt, alpha, looks in props:
        minp = 1.0
        bound = 1.0 if alt == "less" else 0.0
        rows = []
        for s_, n in looks:
            est = s_ / n
            v = null * (1 - null) / n
            d = est - null if alt == "greater" else null - est
            ll = mix_log_lr(d, v, 0.01)
            minp = min(minp, math.exp(-max(ll, 0)))
            w = mix_threshold(v, 0.01, alpha)
            bound = min(bound, est + w) if alt == "less" else max(bound, est - w)
            rows.append({"counts": [s_, n], "p": minp, "estimate": est, "bound": bound, "reject": minp <= alpha})
        out.append({"null": null, "alternative": alt, "alpha": alpha, "looks": rows})
    return out


def main():
    ref = {
        "generated_with": {"python": sys.version.split()[0], "scipy": scipy.__version__,
                            "statsmodels": statsmodels.__version__, "numpy": np.__version__},
        "normal_sf": [{"z": z, "p": num(st.norm.sf(z))} for z in (-3.0, 0.0, 1.0, 5.0, 8.5, 9.5, 20.0, 37.0)],
        "ztest": ztests(), "welch": welch(), "srm": srm(), "mannwhitney": mwu(),
        "quantile": quantiles(), "sequential": sequential(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json")
    with open(path, "w") as f:
        json.dump(ref, f, indent=1, allow_nan=False)
        f.write("\n")


if __name__ == "__main__":
    main()
