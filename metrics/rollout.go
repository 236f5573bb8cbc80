package metrics

import "github.com/prometheus/client_golang/prometheus"

// newRollout makes the series of automatic rollouts.
func (m *Metrics) newRollout(f func(prometheus.Collector)) {
	m.RolloutStep = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "rollout_step",
		Help: "The rollout step in force per endpoint, from 1; 0 when no rollout is running."}, []string{"endpoint"})
	m.RolloutRollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rollout_rollbacks_total",
		Help: "Automatic rollbacks by endpoint and the gate that failed."}, []string{"endpoint", "gate"})
	m.RolloutGateErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rollout_gate_errors_total",
		Help: "Gate checks that could not be computed (missing data, Prometheus unreachable); the rollout holds its step."}, []string{"endpoint", "gate"})
	m.RolloutGatePValue = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "rollout_gate_p_value",
		Help: "The latest p-value of each statistical gate (always valid for the sequential error-ratio test)."}, []string{"endpoint", "gate"})
	m.RolloutTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rollout_transitions_total",
		Help: "Rollout transitions by endpoint and action (start, step, promote, pause, resume, abort, auto_rollback)."}, []string{"endpoint", "action"})
	m.RolloutDriving = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "rollout_driving",
		Help: "1 while this replica holds the rollout lease and drives rollouts; 0 while it follows."})
	for _, c := range []prometheus.Collector{m.RolloutStep, m.RolloutRollbacks, m.RolloutGateErrors, m.RolloutGatePValue, m.RolloutTransitions, m.RolloutDriving} {
		f(c)
	}
}

// newBandit makes the series of bandits.
func (m *Metrics) newBandit(f func(prometheus.Collector)) {
	m.BanditPulls = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "bandit_arm_rewards",
		Help: "Rewards counted per bandit arm (its pulls)."}, []string{"endpoint", "arm"})
	m.BanditRewardMean = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "bandit_arm_reward_mean",
		Help: "Each bandit arm's mean reward (stat=mean) and its 95% interval (stat=lower, upper)."}, []string{"endpoint", "arm", "stat"})
	m.BanditProbBest = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "bandit_arm_probability_best",
		Help: "Each bandit arm's posterior probability of having the best mean reward."}, []string{"endpoint", "arm"})
	m.BanditUpdates = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "bandit_updates_total",
		Help: "Bandit weight updates made by this replica."}, []string{"endpoint"})
	m.BanditRewards = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "bandit_rewards_total",
		Help: "Rewards by endpoint, source (success, header, api) and result (counted, duplicate, unknown, missing, invalid, unsampled)."},
		[]string{"endpoint", "source", "result"})
	for _, c := range []prometheus.Collector{m.BanditPulls, m.BanditRewardMean, m.BanditProbBest, m.BanditUpdates, m.BanditRewards} {
		f(c)
	}
}
