// Package metrics defines every Prometheus series modelsplit exports, in one
// place, so names and labels stay consistent across packages.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	ExtProcStreams   *prometheus.CounterVec // client (envoy|grpc), result (ok|error|malformed)
	RLSLookups       *prometheus.CounterVec // result (ok|bad_request|unknown_endpoint|error)

	// Assignment store.
	StoreUp         prometheus.Gauge       // 1 reachable, 0 degraded to hashing
	StoreErrors     *prometheus.CounterVec // op (get|put|list)
	StoreTimeouts   prometheus.Counter     // reads that exceeded the budget
	StoreWritesLost prometheus.Counter     // write-behind entries dropped (queue full)
	CacheHits       prometheus.Counter
	CacheMisses     prometheus.Counter

	// Control plane.
	XDSClients         *prometheus.GaugeVec   // node_kind
	XDSNacks           *prometheus.CounterVec // node_kind, type
	XDSSnapshotRefused prometheus.Counter     // configs refused by validation
	XDSSnapshotVersion *prometheus.GaugeVec   // node_kind, version: 1 for the served version
	ConfigReloads      *prometheus.CounterVec // result (ok|error)
}

// New registers every series on a fresh registry, plus Go and process
// collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}

	m.Decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "decisions_total",
		Help: "Variant decisions by endpoint, variant and source (target, rule, store, hash, random, fallback)."},
		[]string{"endpoint", "variant", "source"})
	m.DecisionDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "decision_duration_seconds",
		Help:    "Time to decide one request's variant, store lookups included.",
		Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3}})
	m.UnknownEndpoint = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "unknown_endpoint_total",
		Help: "Requests that named an endpoint missing from the config; passed through unchanged."})
	m.ExtProcStreams = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "extproc_streams_total",
		Help: "ext_proc streams by client kind and result."}, []string{"client", "result"})
	m.RLSLookups = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rls_lookups_total",
		Help: "RouteLookup calls from proxyless gRPC clients by result; any non-ok result sends the client to its default target."}, []string{"result"})

	m.StoreUp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "store_up",
		Help: "1 when the assignment store is reachable, 0 while decisions fall back to hashing."})
	m.StoreErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "store_errors_total",
		Help: "Assignment store errors by operation."}, []string{"op"})
	m.StoreTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "store_timeouts_total",
		Help: "Store reads that exceeded store.timeout; the hash decided instead."})
	m.StoreWritesLost = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "store_writes_dropped_total",
		Help: "Write-behind assignments dropped because the queue was full (the hash still gives the same answer)."})
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

	for _, c := range []prometheus.Collector{
		m.Decisions, m.DecisionDuration, m.UnknownEndpoint, m.ExtProcStreams, m.RLSLookups,
		m.StoreUp, m.StoreErrors, m.StoreTimeouts, m.StoreWritesLost, m.CacheHits, m.CacheMisses,
		m.XDSClients, m.XDSNacks, m.XDSSnapshotRefused, m.XDSSnapshotVersion, m.ConfigReloads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	return m
}
