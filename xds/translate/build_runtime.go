package translate

import (
	"sort"

	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelsplit/modelsplit/config"
)

// Envoy gets the live weights through RTDS, outside the route table
// (weightedClusters): one Runtime resource, WeightsRuntimeName, is the RTDS
// layer of that name in the bootstrap (Bootstrap). It holds, for every
// variant of every endpoint, the key
//
//	modelsplit.weights.<endpoint>/<variant>
//
// (WeightsRuntimePrefix, a dot, the cluster name) with the variant's weight
// scaled to config.WeightScale, 0 included: Envoy uses a route's
// placeholder weight only for a key the runtime lacks, and a key of 0 is
// never picked (docs/envoy-notes.md §6.4).
const (
	WeightsRuntimeName   = "modelsplit_weights"
	WeightsRuntimePrefix = "modelsplit.weights"
	// RuntimeDefaultWeight is every variant's weight in Envoy's routes.
	// Envoy reads it only for a key missing from the runtime layer: never
	// once the layer is loaded (the bootstrap makes Envoy wait for it
	// before it loads listeners and clusters), at most for the moment
	// between a variant's key and its route coming or going in one update,
	// when 1 against the others' 10,000 is negligible.
	RuntimeDefaultWeight = 1
)

// The runtime layer's fields, as nested structs: Envoy joins the keys of
// nested structs with dots, so the layer writes the prefix once rather
// than once per key.
var weightsRuntimePath = []string{"modelsplit", "weights"}

// WeightsRuntime is the Runtime resource holding every endpoint's weights.
func WeightsRuntime(cfg *config.Config) *runtimev3.Runtime {
	weights := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		scaled := config.ScaledWeights(e.Variants)
		for j, v := range e.Variants {
			weights.Fields[config.ClusterName(e.Name, v.Name)] = structpb.NewNumberValue(float64(scaled[j]))
		}
	}
	layer := weights
	for i := len(weightsRuntimePath) - 1; i >= 0; i-- {
		layer = &structpb.Struct{Fields: map[string]*structpb.Value{weightsRuntimePath[i]: structpb.NewStructValue(layer)}}
	}
	return &runtimev3.Runtime{Name: WeightsRuntimeName, Layer: layer}
}

// Field numbers of the Runtime resource that composeWeightsRuntime writes.
const (
	runtimeNameField  protowire.Number = 1 // Runtime.name
	runtimeLayerField protowire.Number = 2 // Runtime.layer
	structFieldsField protowire.Number = 1 // Struct.fields (map entries)
	mapKeyField       protowire.Number = 1
	mapValueField     protowire.Number = 2
	valueStructField  protowire.Number = 5 // Value.struct_value
)

// endpointWeights encodes one endpoint's keys as entries of the innermost
// struct's fields map, sorted by key: what a deterministic encoding of
// WeightsRuntime writes for this endpoint.
func endpointWeights(e *config.Endpoint) ([]byte, error) {
	scaled := config.ScaledWeights(e.Variants)
	type kv struct {
		key string
		w   uint32
	}
	kvs := make([]kv, len(e.Variants))
	for i, v := range e.Variants {
		kvs[i] = kv{config.ClusterName(e.Name, v.Name), scaled[i]}
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].key < kvs[j].key })
	var out []byte
	for _, x := range kvs {
		// One entry, encoded by the same library (and rules) as the
		// whole resource would be.
		b, err := marshal(&structpb.Struct{Fields: map[string]*structpb.Value{x.key: structpb.NewNumberValue(float64(x.w))}})
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

// weightsOrder sorts endpoint names as their keys sort in the runtime
// layer. A key is "<endpoint>/<variant>" and names hold no "/", so every
// key of one endpoint sorts against every key of another as name+"/"
// does (not as the names do: "a-b/…" sorts before "a/…").
func weightsOrder(names []string) []string {
	out := append([]string(nil), names...)
	sort.Slice(out, func(i, j int) bool { return out[i]+"/" < out[j]+"/" })
	return out
}

// composeWeightsRuntime encodes the Runtime resource from the endpoints'
// encoded entries, in weightsOrder, without encoding them again: byte for
// byte what encoding WeightsRuntime gives (TestComposedRoutesEqualEncoded).
// The entries are the innermost struct's last and only field, so
// everything before them is a prefix made of lengths.
func composeWeightsRuntime(order []string, entries func(string) []byte) *Encoded {
	inner := 0
	for _, n := range order {
		inner += len(entries(n))
	}
	// Sizes from the inside out: the struct holding the entries, and for
	// each path element the value wrapping it, the map entry and the
	// struct holding that entry.
	size := inner
	type level struct {
		key                string
		valueLen, entryLen int
	}
	levels := make([]level, len(weightsRuntimePath))
	for i := len(weightsRuntimePath) - 1; i >= 0; i-- {
		key := weightsRuntimePath[i]
		valueLen := protowire.SizeTag(valueStructField) + protowire.SizeBytes(size)
		entryLen := protowire.SizeTag(mapKeyField) + protowire.SizeBytes(len(key)) + protowire.SizeTag(mapValueField) + protowire.SizeBytes(valueLen)
		levels[i] = level{key, valueLen, entryLen}
		size = protowire.SizeTag(structFieldsField) + protowire.SizeBytes(entryLen) // the struct holding the entry
	}
	out := make([]byte, 0, 64+size)
	out = protowire.AppendTag(out, runtimeNameField, protowire.BytesType)
	out = protowire.AppendString(out, WeightsRuntimeName)
	out = protowire.AppendTag(out, runtimeLayerField, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(size))
	for i, l := range levels {
		out = protowire.AppendTag(out, structFieldsField, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(l.entryLen))
		out = protowire.AppendTag(out, mapKeyField, protowire.BytesType)
		out = protowire.AppendString(out, l.key)
		out = protowire.AppendTag(out, mapValueField, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(l.valueLen))
		out = protowire.AppendTag(out, valueStructField, protowire.BytesType)
		inside := inner
		if i+1 < len(levels) {
			inside = protowire.SizeTag(structFieldsField) + protowire.SizeBytes(levels[i+1].entryLen)
		}
		out = protowire.AppendVarint(out, uint64(inside))
	}
	for _, n := range order {
		out = append(out, entries(n)...)
	}
	return newEncoded(WeightsRuntimeName, out)
}
