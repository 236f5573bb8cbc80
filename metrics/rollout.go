package metrics

import "github.com/prometheus/client_golang/prometheus"

// Rollout holds the series of automatic rollouts.
type Rollout struct {
	Step        *prometheus.GaugeVec   // endpoint: the step in force, 0 when no rollout runs
	Rollbacks   *prometheus.CounterVec // endpoint, gate: automatic rollbacks
	GateErrors  *prometheus.CounterVec // endpoint, gate: checks that could not be computed (the step holds)
	GatePValue  *prometheus.GaugeVec   // endpoint, gate: the latest p-value
	Transitions *prometheus.CounterVec // endpoint, action: start, step, promote, pause, resume, abort, auto_rollback
	Driving     prometheus.Gauge       // 1 while this replica holds the rollout lease
}

func newRollout(f func(prometheus.Collector)) Rollout {
	r := Rollout{
		Step: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "rollout_step",
			Help: "The rollout step in force per endpoint, from 1; 0 when no rollout is running."}, []string{"endpoint"}),
		Rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rollout_rollbacks_total",
			Help: "Automatic rollbacks by endpoint and the gate that failed."}, []string{"endpoint", "gate"}),
		GateErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rollout_gate_errors_total",
			Help: "Gate checks that could not be computed (missing data, Prometheus unreachable); the rollout holds its step."}, []string{"endpoint", "gate"}),
		GatePValue: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "rollout_gate_p_value",
			Help: "The latest p-value of each statistical gate (always valid for the sequential error-ratio test)."}, []string{"endpoint", "gate"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rollout_transitions_total",
			Help: "Rollout transitions by endpoint and action (start, step, promote, pause, resume, abort, auto_rollback)."}, []string{"endpoint", "action"}),
		Driving: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "rollout_driving",
			Help: "1 while this replica holds the rollout lease and drives rollouts; 0 while it follows."}),
	}
	f(r.Step)
	f(r.Rollbacks)
	f(r.GateErrors)
	f(r.GatePValue)
	f(r.Transitions)
	f(r.Driving)
	return r
}
