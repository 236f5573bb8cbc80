// Package statistics holds the hypothesis tests that automatic rollouts
// use to decide whether a canary variant is worse than the baseline.
// Every function is pure: counts or summaries in, statistic and
// p-values out, no I/O, no clocks, no randomness. Bad input (n = 0,
// events > n, negative variance, mismatched lengths) is an error that
// names the problem, never a panic or a NaN.
//
// Conventions: the first sample is the canary, the second the baseline,
// and PValues.Greater is the p-value for "the first is larger" (more
// errors, higher latency). Tails are computed with survival functions
// (the normal tail through math.Erfc), so a p-value of 1e-200 keeps its
// relative precision; it reaches 0 only where float64 underflows.
//
// # Which test for which question
//
// Error ratio of canary vs baseline, at one fixed point in time:
// TwoProportionZTest (pooled z, as statsmodels' proportions_ztest), with
// NewcombeInterval for the size of the difference (Newcombe's hybrid
// score interval from two Wilson intervals; chosen over Wald because it
// keeps sensible coverage with few events and is not degenerate at zero
// errors). Assumes independent requests and enough events for the
// normal approximation (roughly 5+ expected errors per arm).
//
// Error ratio checked again and again while traffic flows: SequentialTest,
// a one-sided mSPRT (Johari, Pekelis, Walsh, "Always valid inference"),
// fed cumulative counts at every check. Its p-value is valid at every
// look, so the gate may stop the moment it rejects; repeatedly applying
// a fixed-sample test instead inflates false rollbacks well beyond alpha.
// A single proportion against a fixed value ("shadow agreement at least
// 0.95") uses SequentialProportion, the same construction for one
// sample. For any other fixed-sample test looked at repeatedly (Welch,
// Mann–Whitney, SRM), judge look k at AlphaSpending(alpha, k) =
// alpha·6/(π²k²): cruder (a union bound, conservative) but needs no
// state beyond the look number.
//
// A mean metric with summaries only (tokens per response, cost): WelchTTest
// from (n, mean, variance), as scipy.stats.ttest_ind_from_stats with
// equal_var=False. Assumes means that are roughly normal (large n) and
// does not assume equal variances. Not for latency: heavy tails make
// the mean and variance unstable.
//
// Latency and other skewed metrics kept as histograms:
// MannWhitneyHistogram, the rank-sum test on bucket counts, where the
// observations in one bucket are ties (asymptotic normal approximation
// with tie and continuity correction, as scipy.stats.mannwhitneyu).
// It asks whether one sample tends to be larger, not whether a given
// quantile moved; HistogramQuantile estimates quantiles from the same
// buckets the way Prometheus' histogram_quantile does (linear
// interpolation within the bucket), to report how large a shift is.
//
// Traffic split sanity: SampleRatioMismatch, Pearson's chi-square
// goodness of fit of the observed split against the split the weights
// in force should have produced, summed over windows with different
// weights. A mismatch (small p, 0.001 is usual) means the assignment or
// the logging is broken and the other tests' results cannot be trusted.
//
// # Where the reference returns nan
//
// Documented behaviour instead of NaN: a z-test whose pooled variance is
// 0 (no events, or all events, in both arms) has z 0 and p 1; a Welch
// test with both variances 0 and equal means has t 0, df 1, p 1 (with
// different means t is ±Inf and p 0, as SciPy); a chi-square with fewer
// than two variants expecting traffic has statistic 0 and p 1; a variant
// that received traffic while its expected count was 0 is an infinite
// mismatch (p 0); a Mann–Whitney with every observation in one bucket
// has p 1 (as SciPy).
//
// # Precision
//
// The reference values (testdata/reference.py, SciPy 1.17.1,
// statsmodels 0.15.0) are matched to 1e-9 relative, with one exception:
// gonum's Student t tail (mathext.RegIncBeta) loses relative precision
// roughly in proportion to the degrees of freedom, about 1e-15·df
// (7e-7 at df 2e9, i.e. a billion observations per arm). Below df 2e6
// it is within 1e-9. A gate deciding at alpha 0.05 does not notice.
//
// The sequential tests rest on a normal approximation with a plug-in
// variance, so their guarantee is approximate while counts are small;
// the seeded A/A simulation in the tests (1% errors, 30 looks of 500
// requests per arm) measures the false-rejection rate at 1.3% for
// alpha 0.05.//
// # Mutation testing
//
// `make mutate` mutates this package (scripts/mutate.sh). These surviving
// mutants are equivalent: no input can tell them from the code as written.
//
//   - histogram.go, MannWhitneyHistogram: `!(s > 0)` as `!(s >= 0)`. s is
//     0 only when every observation is in one bucket; then U is exactly
//     its mean n1·n2/2, each z is -0.5/0 = -Inf and every p-value 1, as
//     the early return gives.
//   - histogram.go, HistogramQuantile: `end <= 0` as `end < 0`. For a
//     first bucket bounded by 0 the interpolation runs from 0 to 0 and
//     returns 0, as the early return does.
//   - sequential.go, mixtureLogLR: `u < -30` as `u <= -30`, and in the
//     far branch's `- 0.5*math.Log(2*math.Pi)` the `-` as `+`, the `*` as
//     `/` or `2*math.Pi` as `2/math.Pi`. That branch is reached only for
//     an estimate far on the null side, where log Λ stays below 0 with
//     any of them (base <= log 2, log 30 > 3.4), and the p-value is
//     exp(-max(log Λ, 0)) = 1 either way; mixtureThreshold never reaches
//     it (it searches u >= 0).
//   - sequential.go, mixtureThreshold: the loop bound `i < 200` as `<=`,
//     `i++` as `i--`, `&&` as `||`, `hi-lo > 1e-15*hi` as `>=`, `hi+lo`
//     or `1e-15/hi`, and `< target` as `<= target`. The bisection halves
//     the bracket each time and reaches the precision of a float64 within
//     about 60 steps, so how it stops moves the bound only in its last
//     digits (a tolerance of 1e-15 of the bracket, or 1e-15 over it),
//     far below anything a gate compares, and equality with the target
//     has probability 0.
package statistics
