package translate

import (
	"fmt"
	"sort"
	"strings"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// GRPCDefaultReceiveLimit is the largest message a grpc-go client takes by
// default (grpc.MaxCallRecvMsgSize, 4 MiB). A DiscoveryResponse larger than
// it is refused by a grpc-go xDS client, which then drops the stream and
// reconnects, over and over: it never gets that config.
const GRPCDefaultReceiveLimit = 4 << 20

// Oversized is one xDS resource, or one type's whole state-of-the-world
// response, larger than a client limit.
type Oversized struct {
	Kind  NodeKind
	Type  string // short type: listener, route configuration, cluster, endpoints
	Name  string // the resource; "" for a type's whole response
	Bytes int
	Limit int
}

func (o Oversized) String() string {
	what := fmt.Sprintf("%s %q", o.Type, o.Name)
	if o.Name == "" {
		what = "the " + o.Type + " response (every " + o.Type + " together, as sent to a client that subscribes to all)"
	}
	return fmt.Sprintf("%s for %s nodes is %d bytes (%.1f MiB), over the %d bytes (%.0f MiB) a grpc-go client accepts by default "+
		"(grpc.MaxCallRecvMsgSize): such a client refuses it and reconnects without end; split the config (fewer endpoints "+
		"per modelsplit) or raise the clients' receive limit",
		what, o.Kind, o.Bytes, float64(o.Bytes)/(1<<20), o.Limit, float64(o.Limit)/(1<<20))
}

// OversizedResources lists the resources of res, and the per-type totals
// (a state-of-the-world response carries every resource of its type),
// whose encoding exceeds limit bytes, largest first.
func OversizedResources(res Resources, kind NodeKind, limit int) []Oversized {
	var out []Oversized
	for t, rs := range res {
		total := 0
		for _, r := range rs {
			n := proto.Size(r)
			total += n
			if n > limit {
				out = append(out, Oversized{Kind: kind, Type: shortType(t), Name: cachev3.GetResourceName(r), Bytes: n, Limit: limit})
			}
		}
		if total > limit && len(rs) > 1 {
			out = append(out, Oversized{Kind: kind, Type: shortType(t), Bytes: total, Limit: limit})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bytes > out[j].Bytes })
	return out
}

func shortType(t resource.Type) string {
	switch t {
	case resource.ListenerType:
		return "listener"
	case resource.RouteType:
		return "route configuration"
	case resource.ClusterType:
		return "cluster"
	case resource.EndpointType:
		return "endpoints"
	case resource.RuntimeType:
		return "runtime"
	}
	return t[strings.LastIndex(t, ".")+1:]
}

// OversizedInSet is OversizedResources over an encoded set (what the
// server sends): each resource's encoded length, and each type's total.
func OversizedInSet(set Set, kind NodeKind, limit int) []Oversized {
	var out []Oversized
	for t, rs := range set {
		total := 0
		for name, e := range rs {
			n := len(e.Bytes)
			total += n
			if n > limit {
				out = append(out, Oversized{Kind: kind, Type: shortType(t), Name: name, Bytes: n, Limit: limit})
			}
		}
		if total > limit && len(rs) > 1 {
			out = append(out, Oversized{Kind: kind, Type: shortType(t), Bytes: total, Limit: limit})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bytes > out[j].Bytes })
	return out
}
