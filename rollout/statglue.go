package rollout

import "errors"

// TEMPORARY: the statistics package is being written; these adapt it.
var errNoStats = errors.New("statistics not wired yet")

type sequential struct{}

func newSequential(margin, alpha float64) *sequential { return &sequential{} }
func (s *sequential) update(xc, nc, xb, nb uint64) (float64, bool, error) {
	return 1, false, errNoStats
}
func spentAlpha(alpha float64, k int) float64 { return alpha }
func histQuantile(bounds []float64, counts []uint64, q float64) (float64, error) {
	return 0, errNoStats
}
func mannWhitneyGreater(c, b []uint64) (float64, error)           { return 1, errNoStats }
func proportionBelow(x, n uint64, floor float64) (float64, error) { return 1, errNoStats }
func srm(ws []srmWindow, names []string, canary string) (chi2, p, expCanary float64, err error) {
	return 0, 1, 0, errNoStats
}
