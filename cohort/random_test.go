package cohort_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
)

// anonymousConfig is an endpoint sticky on a header that the requests
// below never send, so every request is split at random by weight.
func anonymousConfig(t *testing.T, weights ...int) *config.Config {
	t.Helper()
	var b strings.Builder
	b.WriteString("endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    sticky: {header: x-user-id}\n    variants:\n")
	for i, w := range weights {
		fmt.Fprintf(&b, "      - {name: v%d, weight: %d, backends: [\"10.0.0.%d:80\"]}\n", i, w, i+1)
	}
	cfg, err := config.Parse("anon.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Requests without a user key are split at random in proportion to the
// weights; a variant at weight 0 gets none of them.
func TestAnonymousRequestsSplitByWeight(t *testing.T) {
	const n = 8000
	for _, weights := range [][]int{{25, 75}, {0, 30, 0, 70}, {60, 0, 40, 0}} {
		e, _ := newEngine(t, cohort.NewMemoryStore(0), anonymousConfig(t, weights...))
		total := 0
		for _, w := range weights {
			total += w
		}
		counts := map[string]int{}
		for i := 0; i < n; i++ {
			d := decide(t, e, headers{})
			if d.Source != cohort.SourceRandom {
				t.Fatalf("weights %v: anonymous request decided by %s, want random", weights, d.Source)
			}
			counts[d.Variant]++
		}
		for i, w := range weights {
			name := fmt.Sprintf("v%d", i)
			p := float64(w) / float64(total)
			sigma := math.Sqrt(n * p * (1 - p))
			if got := counts[name]; w == 0 && got != 0 || math.Abs(float64(got)-n*p) > 5*sigma+1 {
				t.Errorf("weights %v: %s got %d of %d anonymous requests, want %.0f (5 sigma %.0f)", weights, name, got, n, n*p, 5*sigma)
			}
		}
	}
}
