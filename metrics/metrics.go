// Package metrics defines every Prometheus series modelsplit exports, in one
// place, so names and labels stay consistent across packages. The observe
// series (variant requests, responses, latency) are the exception: package
// stats counts them in windows and exports them from its totals (Stats).
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/modelsplit/modelsplit/stats"
)

const namespace = "modelsplit"

// Metrics holds the registry and the series. Create one per process (tests
// create their own so they never share counters).
type Metrics struct {
	Registry *prometheus.Registry

	// Decision path (ext_proc and RLS).
	Decisions        *prometheus.CounterVec // endpoint, variant, source
	DecisionDuration prometheus.Histogram   // seconds, whole decision
	UnknownEndpoint  prometheus.Counter     // requests naming an endpoint not in config
	ExtProcStreams   *prometheus.CounterVec // client (envoy|grpc), result (ok|passthrough|error|malformed|refused|idle)
	// ExtProcOpenStreams is the ext_proc streams open now (extproc.max_streams bounds it).
	ExtProcOpenStreams prometheus.Gauge
	RLSLookups         *prometheus.CounterVec // result (ok|bad_request|unknown_endpoint|error)

	// Stats holds the per-variant results of recent windows (requests,
	// status classes and latency from the observe filter, decisions and
	// new users from the cohort engine); it exports
	// modelsplit_variant_requests_total, modelsplit_variant_responses_total
	// and modelsplit_variant_latency_seconds from its totals.
	Stats *stats.Recorder

	// Observation (the observe ext_proc filter, observability mode).
	ObserveStreams  *prometheus.CounterVec // client, result
	VariantFailover *prometheus.CounterVec // endpoint, variant (routed to), served: failover answers

	// Generative models (the gateway's gRPC access log, per request).
	VariantTTFB       *prometheus.HistogramVec // endpoint, variant: request start → first upstream response byte
	VariantDuration   *prometheus.HistogramVec // endpoint, variant: request start → last byte sent to the client
	VariantTokens     *prometheus.HistogramVec // endpoint, variant: tokens the model server reported per response
	AccessLogEntries  *prometheus.CounterVec   // result (recorded|no_cluster|unknown_endpoint|unobserved|unknown_variant|intermediate)
	AccessLogMessages prometheus.Counter       // StreamAccessLogs messages (batches) received

	// Shadow comparison.
	ShadowComparisons *prometheus.CounterVec   // endpoint, shadow, result (agree|disagree)
	ShadowAgreement   *prometheus.GaugeVec     // endpoint, shadow: agreeing / compared, since start
	ShadowLatencyDiff *prometheus.HistogramVec // endpoint, shadow: shadow minus primary, seconds
	ShadowErrors      *prometheus.CounterVec   // endpoint, shadow, kind (transport|status)
	ShadowDropped     *prometheus.CounterVec   // endpoint, shadow, reason
	ShadowInFlight    *prometheus.GaugeVec     // endpoint, shadow: replays running
	ShadowBytes       *prometheus.GaugeVec     // endpoint, shadow: bytes held for replays

	// Live control (admin API).
	ControlChanges *prometheus.CounterVec // action, result (ok|refused)
	ControlWeight  *prometheus.GaugeVec   // endpoint, variant: weight in force
	ControlStateOK prometheus.Gauge       // 1 when the last persist/load of live state succeeded
	ConfigFileOK   prometheus.Gauge       // 1 while the config file can be read
	// ControlStateRevision is the live state's revision in memory and as
	// last read from the store (source: memory|store; -1 unreadable).
	ControlStateRevision *prometheus.GaugeVec
	ControlStateLost     prometheus.Counter // the store was found without our state (FLUSHALL, an empty Redis)

	// Assignment store.
	StoreUp         prometheus.Gauge       // 1 reachable, 0 degraded to hashing
	StoreErrors     *prometheus.CounterVec // op (get|put|list)
	StoreTimeouts   prometheus.Counter     // reads that exceeded the budget
	StoreWritesLost *prometheus.CounterVec // reason (queue_full|retry_full|refused|shutdown): assignments never written
	StoreDown       prometheus.Counter     // up→down transitions (flaps)
	StoreWriteBacks *prometheus.CounterVec // result (stored|conflict): fallback decisions written back
	CacheHits       prometheus.Counter
	CacheMisses     prometheus.Counter

	// Control plane.
	XDSClients         *prometheus.GaugeVec   // node_kind
	XDSNacks           *prometheus.CounterVec // node_kind, type
	XDSSnapshotRefused prometheus.Counter     // configs refused by validation
	XDSSnapshotVersion *prometheus.GaugeVec   // node_kind, version: 1 for the served version
	ConfigReloads      *prometheus.CounterVec // result (ok|error)

	// TLS on the xDS and ext_proc listeners.
	TLSHandshakeFailures *prometheus.CounterVec // listener (xds|extproc), reason

	// Automatic rollouts.
	RolloutStep        *prometheus.GaugeVec   // endpoint: the step in force, 0 when no rollout runs
	RolloutRollbacks   *prometheus.CounterVec // endpoint, gate: automatic rollbacks
	RolloutGateErrors  *prometheus.CounterVec // endpoint, gate: checks that could not be computed (the step holds)
	RolloutGatePValue  *prometheus.GaugeVec   // endpoint, gate: the latest p-value
	RolloutTransitions *prometheus.CounterVec // endpoint, action: start, step, promote, pause, resume, abort, auto_rollback
	RolloutDriving     prometheus.Gauge       // 1 while this replica holds the rollout lease

	// Bandits.
	BanditPulls      *prometheus.GaugeVec   // endpoint, arm: rewards counted
	BanditRewardMean *prometheus.GaugeVec   // endpoint, arm, stat (mean|lower|upper)
	BanditProbBest   *prometheus.GaugeVec   // endpoint, arm
	BanditUpdates    *prometheus.CounterVec // endpoint
	BanditRewards    *prometheus.CounterVec // endpoint, source, result
}

// New registers every series on a fresh registry, plus Go and process
// collectors.
func New() *Metrics { return NewWithStats(stats.Options{}) }

// NewWithStats is New with the results windows configured (their length).
func NewWithStats(so stats.Options) *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	m.newRollout(f)
	m.newBandit(f)

	m.Decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "decisions_total",
		Help: "Variant decisions by endpoint, variant and source (target, rule, store, hash, random, fallback, ramp)."},
		[]string{"endpoint", "variant", "source"})
	m.DecisionDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "decision_duration_seconds",
		Help:    "Time to decide one request's variant, store lookups included.",
		Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3}})
	m.UnknownEndpoint = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "unknown_endpoint_total",
		Help: "Requests that named an endpoint missing from the config; passed through unchanged."})
	m.ExtProcStreams = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "extproc_streams_total",
		Help: "ext_proc streams by client kind and result: ok, passthrough, error, malformed, refused (past extproc.max_streams: RESOURCE_EXHAUSTED, Envoy fails open), idle (closed by extproc.first_message_timeout or idle_timeout)."}, []string{"client", "result"})
	m.ExtProcOpenStreams = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "extproc_streams_open",
		Help: "ext_proc streams (decide and observe) open now; extproc.max_streams bounds it."})
	m.RLSLookups = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rls_lookups_total",
		Help: "RouteLookup calls from proxyless gRPC clients by result; any non-ok result sends the client to its default target."}, []string{"result"})

	m.Stats = stats.New(so)
	m.ObserveStreams = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "observe_streams_total",
		Help: "Observe-filter streams by client kind and result (observed, no_variant, incomplete, unknown_endpoint)."}, []string{"client", "result"})
	m.VariantFailover = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "variant_failovers_total",
		Help: "Requests routed to a variant (label variant) that another variant (label served) answered: Envoy failed over because the first had no healthy backend, or retried there after a connection failure. Also counted in variant_requests_total under the served variant."},
		[]string{"endpoint", "variant", "served"})

	m.VariantTTFB = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "variant_time_to_first_byte_seconds",
		Help:    "Time from the start of a request to the first byte of its variant's answer (for a token stream, the first token's wait), from Envoy's access log; requests the variant never answered have none.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}}, []string{"endpoint", "variant"})
	m.VariantDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "variant_duration_seconds",
		Help:    "Time from the start of a request to the last byte sent to the client (a whole generation or stream), from Envoy's access log.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}}, []string{"endpoint", "variant"})
	m.VariantTokens = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "variant_response_tokens",
		Help:    "Tokens a response carried, as the model server reported them in the endpoint's tokens_header (response header or trailer), from Envoy's access log.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 9)}, []string{"endpoint", "variant"})
	m.AccessLogEntries = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "access_log_entries_total",
		Help: "Envoy access log entries by result (recorded; no_cluster: no variant served it, e.g. a 404; unknown_endpoint, unknown_variant, unobserved; intermediate: not a request's final entry)."},
		[]string{"result"})
	m.AccessLogMessages = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "access_log_messages_total",
		Help: "Batches of access log entries Envoy sent (StreamAccessLogs messages); entries over messages is the batching."})

	m.ShadowComparisons = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "shadow_comparisons_total",
		Help: "Shadow answers compared with the primary's, by endpoint, shadow and result (agree, disagree)."}, []string{"endpoint", "shadow", "result"})
	m.ShadowAgreement = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "shadow_agreement_ratio",
		Help: "Agreeing comparisons over all comparisons since start, by endpoint and shadow (use shadow_comparisons_total for windows)."}, []string{"endpoint", "shadow"})
	m.ShadowLatencyDiff = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "shadow_latency_difference_seconds",
		Help:    "Shadow latency minus primary latency per compared request (negative: the shadow was faster).",
		Buckets: []float64{-2.5, -1, -.5, -.25, -.1, -.05, -.025, -.01, 0, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"endpoint", "shadow"})
	m.ShadowErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "shadow_errors_total",
		Help: "Shadow replays that failed, by endpoint, shadow and kind (transport: no answer; status: an error status where the primary succeeded)."},
		[]string{"endpoint", "shadow", "kind"})
	m.ShadowDropped = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "shadow_dropped_total",
		Help: "Sampled exchanges not compared, by endpoint, shadow and reason (concurrency, bytes, timeout, incomplete, unsupported, paused)."},
		[]string{"endpoint", "shadow", "reason"})
	m.ShadowInFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "shadow_replays_in_flight",
		Help: "Shadow replays running, by endpoint and shadow."}, []string{"endpoint", "shadow"})
	m.ShadowBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "shadow_bytes_in_flight",
		Help: "Request and response bytes held for shadow replays, by endpoint and shadow."}, []string{"endpoint", "shadow"})

	m.ControlChanges = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "control_changes_total",
		Help: "Live changes through the admin API by action (set_weights, promote, rollback, reset, pause, resume) and result (ok, refused)."},
		[]string{"action", "result"})
	m.ControlWeight = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "variant_weight",
		Help: "Weight in force (config file or live override), by endpoint and variant."}, []string{"endpoint", "variant"})
	m.ConfigFileOK = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "config_file_ok",
		Help: "1 while the config file can be read; 0 while it is missing, unreadable or not a file (the config in force stays)."})
	m.ControlStateOK = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "control_state_ok",
		Help: "1 when the store holds the live state in force here, 0 while it does not (a failed save or read, a store that lost it, a stored state that could not be applied)."})
	m.ControlStateRevision = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "control_state_revision",
		Help: "Revision of the live state in force (source=memory) and in the store as last read (source=store; -1 when it could not be read); they differ while the replica and the store disagree."},
		[]string{"source"})
	m.ControlStateLost = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "control_state_lost_total",
		Help: "Times the store was found holding an older live state than this replica's, or none (FLUSHALL, an empty replacement Redis, a restored backup); the replica saves its state again."})

	m.StoreUp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "store_up",
		Help: "1 when the assignment store is reachable, 0 while decisions fall back to hashing."})
	m.StoreErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "store_errors_total",
		Help: "Assignment store errors by operation."}, []string{"op"})
	m.StoreTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "store_timeouts_total",
		Help: "Store reads that exceeded store.timeout; the hash decided instead."})
	m.StoreWritesLost = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "store_writes_lost_total",
		Help: "Assignments never written to the store, by reason: queue_full (write-behind queue full), retry_full (the buffer kept while the store is down was full), refused (Redis answered an error, e.g. OOM under maxmemory with noeviction), shutdown (the process stopped before the store answered). The user keeps the variant on this replica (cache) but not on others or after a restart."},
		[]string{"reason"})
	m.StoreDown = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "store_down_total",
		Help: "Times the assignment store went from up to down (reads failing or over store.timeout); its rate is the flap rate."})
	m.StoreWriteBacks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "store_writebacks_total",
		Help: "Decisions made while the store was unreachable or over its read budget, written back (SET NX) once it answered: stored, or conflict (an assignment was already there; it wins and the local copy is dropped)."},
		[]string{"result"})
	m.CacheHits = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "assignment_cache_hits_total",
		Help: "Assignments found in the in-process cache."})
	m.CacheMisses = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "assignment_cache_misses_total",
		Help: "Assignments not in the in-process cache."})

	m.XDSClients = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "xds_connected_clients",
		Help: "Open xDS streams by node kind."}, []string{"node_kind"})
	m.XDSNacks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "xds_nacks_total",
		Help: "xDS responses rejected by clients (NACK), by node kind and resource type."}, []string{"node_kind", "type"})
	m.XDSSnapshotRefused = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "xds_snapshot_refused_total",
		Help: "Configs whose resources failed validation; the last good snapshot kept being served."})
	m.XDSSnapshotVersion = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "xds_snapshot_info",
		Help: "1 for the snapshot version currently served to each node kind."}, []string{"node_kind", "version"})
	m.ConfigReloads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "config_reloads_total",
		Help: "Config file reloads by result."}, []string{"result"})
	m.TLSHandshakeFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "tls_handshake_failures_total",
		Help: "Failed TLS handshakes on the xDS and ext_proc listeners, by listener and reason (client_cert_missing, client_cert_untrusted, rejected_by_peer, no_alpn, not_tls, closed, timeout, other)."},
		[]string{"listener", "reason"})

	for _, c := range []prometheus.Collector{
		m.Decisions, m.DecisionDuration, m.UnknownEndpoint, m.ExtProcStreams, m.ExtProcOpenStreams, m.RLSLookups,
		m.Stats.Collector(), m.ObserveStreams, m.VariantFailover,
		m.VariantTTFB, m.VariantDuration, m.VariantTokens, m.AccessLogEntries, m.AccessLogMessages,
		m.ShadowComparisons, m.ShadowAgreement, m.ShadowLatencyDiff, m.ShadowErrors, m.ShadowDropped, m.ShadowInFlight, m.ShadowBytes,
		m.ControlChanges, m.ControlWeight, m.ControlStateOK, m.ConfigFileOK, m.ControlStateRevision, m.ControlStateLost,
		m.StoreUp, m.StoreErrors, m.StoreTimeouts, m.StoreWritesLost, m.StoreDown, m.StoreWriteBacks, m.CacheHits, m.CacheMisses,
		m.XDSClients, m.XDSNacks, m.XDSSnapshotRefused, m.XDSSnapshotVersion, m.ConfigReloads,
		m.TLSHandshakeFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	return m
}
