package extproc_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/extproc/extproctest"
)

// HTTP statuses are classed by their first digit, boundaries included:
// 300 and 399 are 3xx, 400 and 499 4xx, 299 2xx, 500 5xx.
func TestObserveClassBoundaries(t *testing.T) {
	for status, want := range map[int]string{299: "2xx", 300: "3xx", 399: "3xx", 400: "4xx", 499: "4xx", 500: "5xx"} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			h := start(t, "127.0.0.1:0")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			x := extproctest.Exchange{Headers: httpRequest, ResponseHeaders: response(status), Metadata: envoyMD("face"), Mode: observeMode}
			if err := extproctest.Observe(ctx, h.conn, x); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			got := readObserved(h.metrics, "face", "a")
			for got.requests == 0 && time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
				got = readObserved(h.metrics, "face", "a")
			}
			if got != one(want) {
				t.Errorf("HTTP %d observed %v, want %v", status, got, one(want))
			}
		})
	}
}
