package stats

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The series exported from the recorder's totals. Names, labels and help
// are those package metrics declared before the counts moved here, so
// dashboards and alerts keep working.
var (
	requestsDesc = prometheus.NewDesc("modelsplit_variant_requests_total",
		"Requests seen by the observe filter, by endpoint and the variant that served them.",
		[]string{"endpoint", "variant"}, nil)
	responsesDesc = prometheus.NewDesc("modelsplit_variant_responses_total",
		"Responses by endpoint, variant and status class (2xx, 3xx, 4xx, 5xx; gRPC codes mapped as grpc-gateway does).",
		[]string{"endpoint", "variant", "class"}, nil)
	latencyDesc = prometheus.NewDesc("modelsplit_variant_latency_seconds",
		"Time from request headers to response headers as the observe filter saw them, by endpoint and variant.",
		[]string{"endpoint", "variant"}, nil)
)

// Collector exports the recorder's totals since start as Prometheus
// series (the same value each time it is called).
func (r *Recorder) Collector() prometheus.Collector { return collector{r} }

type collector struct{ r *Recorder }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- requestsDesc
	ch <- responsesDesc
	ch <- latencyDesc
}

// Collect exports every variant that has seen a request. As before the
// move, requests_total counts requests with a status (a request whose
// stream was reset before one is in no series) and the classes are 2xx
// to 5xx, plus 1xx when a variant answered one.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	for ep, t := range c.r.AllTotals() {
		for v, k := range t.Variants {
			if k.Answered() == 0 {
				continue
			}
			ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(k.Answered()), ep, v)
			for cl := Class1xx; cl <= Class5xx; cl++ {
				if cl == Class1xx && k.Responses[cl] == 0 {
					continue
				}
				ch <- prometheus.MustNewConstMetric(responsesDesc, prometheus.CounterValue, float64(k.Responses[cl]), ep, v, cl.String())
			}
			buckets := make(map[float64]uint64, len(LatencyBuckets))
			var cum uint64
			for i, b := range LatencyBuckets {
				cum += k.Latency.Counts[i]
				buckets[b] = cum
			}
			ch <- prometheus.MustNewConstHistogram(latencyDesc, k.Latency.Count(), k.Latency.Sum, buckets, ep, v)
		}
	}
}
