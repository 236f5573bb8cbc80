package live

import (
	"fmt"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/config"
)

func TestValidateWeights(t *testing.T) {
	cfg, err := config.Parse("live.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := cfg.Endpoint("face")
	for _, tc := range []struct {
		w    map[string]int
		want string // "" when valid
	}{
		{map[string]int{"stable": 50, "canary": 50}, ""},
		{map[string]int{"stable": 0, "canary": 1}, ""},
		{map[string]int{"stable": config.MaxWeight, "canary": 0}, ""},
		{nil, `"weights" is required`},
		{map[string]int{"stable": 1, "canary": 1, "other": 1}, `unknown variant "other"`},
		{map[string]int{"stable": -1, "canary": 1}, "weights.stable: must not be negative, got -1"},
		{map[string]int{"stable": config.MaxWeight + 1, "canary": 1}, fmt.Sprintf("weights.stable: must be at most %d", config.MaxWeight)},
		{map[string]int{"stable": 1}, `variant "canary" is missing`},
		{map[string]int{"stable": 0, "canary": 0}, "sum to zero"},
	} {
		err := ValidateWeights(e, tc.w)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v, want valid", tc.w, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || CodeOf(err) != ErrInvalid):
			t.Errorf("%v: %v, want ErrInvalid mentioning %q", tc.w, err, tc.want)
		}
	}
	// Every problem is named, in a stable order.
	err = ValidateWeights(e, map[string]int{"stable": -1, "nope": 2})
	if err == nil || !strings.Contains(err.Error(), "must not be negative") || !strings.Contains(err.Error(), `unknown variant "nope"`) ||
		!strings.Contains(err.Error(), `variant "canary" is missing`) {
		t.Fatalf("several problems: %v", err)
	}
}

// Every problem of a weight set is reported, whatever order the map is
// read in.
func TestValidateWeightsReportsEveryProblem(t *testing.T) {
	cfg, err := config.Parse("live.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := cfg.Endpoint("face")
	for i := 0; i < 30; i++ { // map order is random: an early stop shows within a few tries
		err := ValidateWeights(e, map[string]int{"nope": 1, "stable": -1, "canary": config.MaxWeight + 1})
		for _, want := range []string{`unknown variant "nope"`, "weights.stable: must not be negative", "weights.canary: must be at most"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("try %d: %v, want it to mention %q", i, err, want)
			}
		}
	}
}
