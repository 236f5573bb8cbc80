package rollout

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

type apiVerdict = api.GateVerdict

// check evaluates every gate of the plan at the current step. A gate that
// cannot be computed holds the step (VerdictError, counted and logged);
// one without enough data holds it too (VerdictPending): a rollout never
// advances on missing data.
func (m *Manager) check(ctx context.Context, e *config.Endpoint, rec *record, r *run) []apiVerdict {
	p := e.Rollout
	r.checks++
	minN := minRequestsOf(p)
	canaryW := rec.Weights[rec.Canary]
	out := make([]apiVerdict, 0, len(p.Gates)+1)
	// The sample gate: every step needs MinRequests answered requests on
	// the canary (and on the baseline while it takes traffic) before it
	// may advance, whatever the gates say.
	cs, bs := r.stepEv.variant(rec.Canary), r.stepEv.variant(rec.Baseline)
	sample := apiVerdict{Gate: "min_requests", Verdict: api.VerdictPass, Canary: float64(cs.Responses), Baseline: float64(bs.Responses),
		CanaryN: cs.Responses, BaseN: bs.Responses, Detail: fmt.Sprintf("at least %d answered requests per variant in the step", minN)}
	needBase := rec.Weights[rec.Baseline] > 0
	if len(p.Gates) == 0 {
		// A plan without gates is a timed shift (SageMaker's linear or
		// canary traffic shifting): nothing to judge, no sample needed.
		sample.Detail = "no gates: the step advances on its bake time alone"
	} else if cs.Responses < minN || (needBase && bs.Responses < minN) {
		sample.Verdict = api.VerdictPending
	}
	if canaryW == 0 && cs.Responses < minN {
		sample.Detail += " (the canary takes no user traffic at this step: only target-header requests reach it)"
	}
	out = append(out, sample)
	for i, g := range p.Gates {
		v := m.gate(ctx, e, rec, r, i, g, minN)
		if v.Verdict == api.VerdictError {
			m.m.RolloutGateErrors.WithLabelValues(e.Name, v.Gate).Inc()
			m.log.Warn("rollout gate could not be computed; the step holds", zap.String("endpoint", e.Name),
				zap.String("gate", v.Gate), zap.String("detail", v.Detail))
		}
		if v.PValue != nil {
			m.m.RolloutGatePValue.WithLabelValues(e.Name, v.Gate).Set(*v.PValue)
		}
		out = append(out, v)
	}
	return out
}

// baselineEvidence is the baseline's results for comparison: the step's,
// or the whole rollout's while the baseline takes no traffic at this
// step (blue-green after the switch).
func baselineEvidence(rec *record, r *run, minN uint64) VariantCounts {
	if b := r.stepEv.variant(rec.Baseline); b.Responses >= minN || rec.Weights[rec.Baseline] > 0 {
		return b
	}
	return r.allEv.variant(rec.Baseline)
}

func confidenceOf(g config.RolloutGate) float64 {
	if g.Confidence > 0 {
		return g.Confidence
	}
	return DefaultConfidence
}

func (m *Manager) gate(ctx context.Context, e *config.Endpoint, rec *record, r *run, i int, g config.RolloutGate, minN uint64) apiVerdict {
	alpha := 1 - confidenceOf(g)
	switch g.Metric {
	case "error_ratio":
		// One always-valid sequential test over the whole rollout, so
		// checking at every interval, through every step, keeps the false
		// rollback rate at alpha.
		c, b := r.allEv.variant(rec.Canary), r.allEv.variant(rec.Baseline)
		v := apiVerdict{Gate: "error_ratio", CanaryN: c.Responses, BaseN: b.Responses,
			Canary: ratio(c.Errors, c.Responses), Baseline: ratio(b.Errors, b.Responses)}
		s := r.seq[i]
		if s == nil {
			s = newSequential(g.MaxIncrease, alpha)
			r.seq[i] = s
		}
		if c.Responses < minN || b.Responses < minN {
			v.Verdict, v.Detail = api.VerdictPending, fmt.Sprintf("needs %d answered requests per variant", minN)
			return v
		}
		p, reject, err := s.update(c.Errors, c.Responses, b.Errors, b.Responses)
		if err != nil {
			v.Verdict, v.Detail = api.VerdictError, err.Error()
			return v
		}
		v.PValue = &p
		v.Detail = fmt.Sprintf("canary worse by more than %.4g with %.0f%% confidence? (always-valid sequential test)", g.MaxIncrease, 100*(1-alpha))
		v.Verdict = api.VerdictPass
		if reject {
			v.Verdict = api.VerdictFail
		}
		return v
	case "latency":
		q := g.Quantile
		if q <= 0 {
			q = 0.5
		}
		c := r.stepEv.variant(rec.Canary)
		b := baselineEvidence(rec, r, minN)
		bounds := m.latencyBounds()
		v := apiVerdict{Gate: "latency", CanaryN: c.Responses, BaseN: b.Responses}
		if c.Responses < minN || b.Responses < minN {
			v.Verdict, v.Detail = api.VerdictPending, fmt.Sprintf("needs %d answered requests per variant", minN)
			return v
		}
		var err error
		if v.Canary, err = histQuantile(bounds, c.Latency, q); err == nil {
			v.Baseline, err = histQuantile(bounds, b.Latency, q)
		}
		var p float64
		if err == nil {
			p, err = mannWhitneyGreater(c.Latency, b.Latency)
			v.PValue = &p
		}
		if err != nil {
			v.Verdict, v.Detail = api.VerdictError, err.Error()
			return v
		}
		spent := spentAlpha(alpha, r.checks)
		v.Detail = fmt.Sprintf("p%g canary %.4gs vs baseline %.4gs (allowed +%.4gs); Mann-Whitney one-sided p against %.3g (alpha spent per check)",
			100*q, v.Canary, v.Baseline, g.MaxIncrease, spent)
		v.Verdict = api.VerdictPass
		if v.Canary-v.Baseline > g.MaxIncrease && p < spent {
			v.Verdict = api.VerdictFail
		}
		return v
	case "shadow_agreement":
		s := r.allEv.shadows[g.Shadow] // cumulative, as the sequential test needs
		v := apiVerdict{Gate: "shadow_agreement:" + g.Shadow, Baseline: g.MinAgreement}
		if s == nil || s.Compared < minN {
			v.Verdict, v.Detail = api.VerdictPending, fmt.Sprintf("needs %d compared requests", minN)
			if s != nil {
				v.CanaryN = s.Compared
			}
			return v
		}
		v.CanaryN, v.Canary = s.Compared, ratio(s.Agreed, s.Compared)
		at := r.agree[i]
		if at == nil {
			at = newAgreementTest(g.MinAgreement, alpha)
			r.agree[i] = at
		}
		p, reject, err := at.update(s.Agreed, s.Compared)
		if err != nil {
			v.Verdict, v.Detail = api.VerdictError, err.Error()
			return v
		}
		v.PValue = &p
		v.Detail = fmt.Sprintf("agreement below %.4g with %.0f%% confidence? (always-valid sequential test)", g.MinAgreement, 100*(1-alpha))
		v.Verdict = api.VerdictPass
		if reject {
			v.Verdict = api.VerdictFail
		}
		return v
	case "srm":
		threshold := g.PValue
		if threshold <= 0 {
			threshold = DefaultSRMPValue
		}
		v := apiVerdict{Gate: "srm"}
		var total uint64
		for _, w := range r.stepEv.srm {
			for _, n := range w.assigned {
				total += n
			}
		}
		c := r.stepEv.variant(rec.Canary)
		v.CanaryN, v.BaseN = c.Assigned, total-c.Assigned
		if total < minN && splitInStep(r.stepEv.srm) {
			v.Verdict, v.Detail = api.VerdictPending, fmt.Sprintf("needs %d new users in the step", minN)
			return v
		}
		if !splitInStep(r.stepEv.srm) {
			v.Verdict, v.Detail = api.VerdictPass, "one variant takes every new user at this step: no ratio to test"
			return v
		}
		names := variantNames(e)
		chi2, p, expCanary, err := srm(r.stepEv.srm, names, rec.Canary)
		if err != nil {
			v.Verdict, v.Detail = api.VerdictError, err.Error()
			return v
		}
		v.PValue, v.Canary, v.Baseline = &p, ratio(c.Assigned, total), expCanary
		v.Detail = fmt.Sprintf("new users against the weights in force: chi-square %.4g, fails below p=%.3g", chi2, threshold)
		v.Verdict = api.VerdictPass
		if p < threshold {
			v.Verdict = api.VerdictFail
		}
		return v
	case "promql":
		v := apiVerdict{Gate: "promql", Baseline: g.Max}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		val, err := m.opts.Prometheus.Query(qctx, e.Rollout.Prometheus, g.Query)
		if err != nil {
			v.Verdict, v.Detail = api.VerdictError, err.Error()
			return v
		}
		v.Canary = val
		v.Detail = fmt.Sprintf("%s = %.4g (fails above %.4g)", g.Query, val, g.Max)
		v.Verdict = api.VerdictPass
		if val > g.Max {
			v.Verdict = api.VerdictFail
		}
		return v
	}
	return apiVerdict{Gate: g.Metric, Verdict: api.VerdictError, Detail: "unknown gate metric " + g.Metric}
}

func (m *Manager) latencyBounds() []float64 {
	if m.opts.Results == nil {
		return nil
	}
	return m.opts.Results.LatencyBounds()
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func variantNames(e *config.Endpoint) []string {
	out := make([]string, 0, len(e.Variants))
	for _, v := range e.Variants {
		out = append(out, v.Name)
	}
	return out
}

// experimentDecided reports whether an experiment has a winner. The
// canary wins when the baseline's error ratio is higher with 95%
// confidence (the same always-valid test, the other way round); the
// baseline wins through the error_ratio gate failing (a rollback). Until
// then the experiment keeps its fixed weights.
func (r *run) experimentDecided(rec *record) bool {
	if r.winner != "" {
		return true
	}
	c, b := r.allEv.variant(rec.Canary), r.allEv.variant(rec.Baseline)
	if r.reverse == nil {
		r.reverse = newSequential(0, 1-DefaultConfidence)
	}
	if c.Responses == 0 || b.Responses == 0 {
		return false
	}
	p, reject, err := r.reverse.update(b.Errors, b.Responses, c.Errors, c.Responses)
	if err == nil && reject {
		r.winner = rec.Canary
		r.winnerDetail = fmt.Sprintf("baseline error ratio %.4g (n=%d) above the canary's %.4g (n=%d), always-valid p=%.3g",
			ratio(b.Errors, b.Responses), b.Responses, ratio(c.Errors, c.Responses), c.Responses, p)
	}
	return r.winner != ""
}

// splitInStep reports whether new users were split between variants in
// any of the step's windows (two or more variants with weight).
func splitInStep(ws []srmWindow) bool {
	for _, w := range ws {
		n := 0
		for _, x := range w.weights {
			if x > 0 {
				n++
			}
		}
		if n > 1 {
			return true
		}
	}
	return false
}
