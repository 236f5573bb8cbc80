package translate

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// The size checks at their boundaries, for the encoded set the server
// sends (OversizedInSet) and for built resources (OversizedResources):
// a resource exactly at the limit is fine and one byte over is named; a
// type's total counts only when the type has more than one resource (a
// single one is already named); largest first.
func TestOversizedBoundaries(t *testing.T) {
	enc := func(n int) *Encoded { return &Encoded{Bytes: make([]byte, n)} }
	const limit = 100
	set := Set{
		resource.ClusterType:                   {"at-limit": enc(100), "over": enc(101)}, // total 201: the type too
		resource.RouteType:                     {"alone": enc(150)},                      // one resource: no type total
		resource.ListenerType:                  {"a": enc(50), "b": enc(50)},             // total exactly 100: fine
		resource.EndpointType:                  {"a": enc(60), "b": enc(41)},             // total 101: the type only
		resource.RuntimeType:                   {"a": enc(1)},                            // nothing
		"type.googleapis.com/some.pkg.Unknown": {"x": enc(300), "y": enc(1)},             // short name from the URL
	}
	got := OversizedInSet(set, KindEnvoy, limit)
	want := []Oversized{
		{Kind: KindEnvoy, Type: "Unknown", Bytes: 301, Limit: limit},
		{Kind: KindEnvoy, Type: "Unknown", Name: "x", Bytes: 300, Limit: limit},
		{Kind: KindEnvoy, Type: "cluster", Bytes: 201, Limit: limit},
		{Kind: KindEnvoy, Type: "route configuration", Name: "alone", Bytes: 150, Limit: limit},
		{Kind: KindEnvoy, Type: "cluster", Name: "over", Bytes: 101, Limit: limit},
		{Kind: KindEnvoy, Type: "endpoints", Bytes: 101, Limit: limit},
	}
	if !sameOversized(got, want) {
		t.Errorf("OversizedInSet:\n got %+v\nwant %+v", got, want)
	}

	// The same rules over built resources, sized by their encoding.
	cluster := func(name string, size int) types.Resource {
		c := &clusterv3.Cluster{Name: name}
		for pad := size; pad >= 0 && proto.Size(c) != size; pad-- {
			c.AltStatName = strings.Repeat("x", pad) // the padding field's tag and length vary
		}
		if proto.Size(c) != size {
			t.Fatalf("cluster of %d bytes came out %d", size, proto.Size(c))
		}
		return c
	}
	res := Resources{resource.ClusterType: {cluster("at", 200), cluster("over", 201)}}
	got = OversizedResources(res, KindGRPC, 200)
	want = []Oversized{
		{Kind: KindGRPC, Type: "cluster", Bytes: 401, Limit: 200},
		{Kind: KindGRPC, Type: "cluster", Name: "over", Bytes: 201, Limit: 200},
	}
	if !sameOversized(got, want) {
		t.Errorf("OversizedResources:\n got %+v\nwant %+v", got, want)
	}
	if got := OversizedResources(Resources{resource.ClusterType: {cluster("one", 201)}}, KindGRPC, 200); len(got) != 1 || got[0].Name != "one" {
		t.Errorf("one resource over the limit: %+v, want it named and no type total", got)
	}
	if got := OversizedResources(Resources{resource.ClusterType: {cluster("a", 100), cluster("b", 100)}}, KindGRPC, 200); len(got) != 0 {
		t.Errorf("two resources totalling exactly the limit: %+v, want nothing", got)
	}
}

// sameOversized compares as multisets (equal sizes may come in any order)
// and checks the order is largest first.
func sameOversized(got, want []Oversized) bool {
	if len(got) != len(want) {
		return false
	}
	for i := 1; i < len(got); i++ {
		if got[i].Bytes > got[i-1].Bytes {
			return false
		}
	}
	left := append([]Oversized(nil), want...)
	for _, g := range got {
		found := false
		for i, w := range left {
			if g == w {
				left = append(left[:i], left[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// The warning names the resource or the whole type, both sizes in bytes
// and MiB, and the node kind.
func TestOversizedMessage(t *testing.T) {
	one := Oversized{Kind: KindGRPC, Type: "route configuration", Name: "rc", Bytes: 6 << 20, Limit: 4 << 20}.String()
	for _, want := range []string{`route configuration "rc"`, "6291456 bytes (6.0 MiB)", "4194304 bytes (4 MiB)", "grpc nodes"} {
		if !strings.Contains(one, want) {
			t.Errorf("%q lacks %q", one, want)
		}
	}
	all := Oversized{Kind: KindEnvoy, Type: "cluster", Bytes: 5 << 20, Limit: 4 << 20}.String()
	for _, want := range []string{"the cluster response (every cluster together", "5242880 bytes (5.0 MiB)"} {
		if !strings.Contains(all, want) {
			t.Errorf("%q lacks %q", all, want)
		}
	}
	if strings.Contains(all, `cluster ""`) {
		t.Errorf("%q names an empty resource", all)
	}
}
