package extproc

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelsplit/modelsplit/metrics"
)

var streamResults = []string{"ok", "passthrough", "malformed", "error", "refused", "idle"}

// streamCounters holds the ExtProcStreams children up front, so ending a
// stream never hashes label values on the hot path.
type streamCounters map[clientKind]map[string]prometheus.Counter

func newStreamCounters(m *metrics.Metrics) streamCounters {
	c := streamCounters{}
	for _, k := range []clientKind{clientEnvoy, clientGRPC} {
		c[k] = map[string]prometheus.Counter{}
		for _, r := range streamResults {
			c[k][r] = m.ExtProcStreams.WithLabelValues(k.String(), r)
		}
	}
	return c
}

func (c streamCounters) done(k clientKind, result string) { c[k][result].Inc() }
