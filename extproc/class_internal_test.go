package extproc

import (
	"testing"

	"github.com/modelsplit/modelsplit/stats"
)

// statusClass at every boundary, 1xx included (the observe tests read the
// exported series, which count no 1xx), and oddities: below 100 is 2xx,
// 600 and over 5xx.
func TestStatusClassBoundaries(t *testing.T) {
	for code, want := range map[int]stats.Class{
		0: stats.Class2xx, 99: stats.Class2xx, 100: stats.Class1xx, 199: stats.Class1xx,
		200: stats.Class2xx, 299: stats.Class2xx, 300: stats.Class3xx, 399: stats.Class3xx,
		400: stats.Class4xx, 499: stats.Class4xx, 500: stats.Class5xx, 599: stats.Class5xx, 600: stats.Class5xx,
	} {
		if got := statusClass(code); got != want {
			t.Errorf("statusClass(%d) = %v, want %v", code, got, want)
		}
	}
}
