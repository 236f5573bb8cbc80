package extproc

import (
	"strconv"
	"testing"

	"github.com/modelsplit/modelsplit/metrics"
)

// The series made from names off the wire (variant headers of answers) stop
// at maxObservedSeries label sets, over all endpoints: the next new one is
// refused (nil), the ones made stay served.
func TestObservedSeriesAreBounded(t *testing.T) {
	c := seriesCache{m: metrics.New()}
	for i := range maxObservedSeries {
		ep := "ep" + strconv.Itoa(i%2) // two endpoints: the bound is their sum
		if c.get(ep, "v"+strconv.Itoa(i)) == nil {
			t.Fatalf("series %d of %d refused", i+1, maxObservedSeries)
		}
	}
	if s := c.get("ep0", "one-too-many"); s != nil {
		t.Fatalf("series %d made past the bound of %d", maxObservedSeries+1, maxObservedSeries)
	}
	if s := c.get("ep2", "new-endpoint"); s != nil {
		t.Fatal("a new endpoint's series made past the bound")
	}
	if c.get("ep1", "v1") == nil || c.get("ep0", "v0") == nil {
		t.Fatal("a series made before the bound is no longer served")
	}
	if a, b := c.get("ep0", "v0"), c.get("ep0", "v0"); a != b {
		t.Fatal("the same series resolved to two handles")
	}
}

func TestFailoverSeriesAreBounded(t *testing.T) {
	c := seriesCache{m: metrics.New()}
	for i := range maxObservedSeries {
		if c.failover("ep", "from"+strconv.Itoa(i), "to") == nil {
			t.Fatalf("failover series %d of %d refused", i+1, maxObservedSeries)
		}
	}
	if f := c.failover("ep", "one-too-many", "to"); f != nil {
		t.Fatalf("failover series %d made past the bound of %d", maxObservedSeries+1, maxObservedSeries)
	}
	if a, b := c.failover("ep", "from7", "to"), c.failover("ep", "from7", "to"); a == nil || a != b {
		t.Fatal("a failover series made before the bound is not served as the same counter")
	}
}
