package translate

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

// renderOrder lists types as Envoy applies them, then Envoy's runtime
// layer of weights.
var renderOrder = []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, resource.RuntimeType}

// RenderYAML prints resources as YAML documents, one section per type, in
// a stable order: what `modelsplit render` shows and golden files pin.
func RenderYAML(res Resources) ([]byte, error) {
	var out bytes.Buffer
	for _, t := range renderOrder {
		list := res[t]
		if len(list) == 0 {
			continue
		}
		items := make([]any, 0, len(list))
		for _, r := range list {
			v, err := protoToPlain(r)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", TypeShort(t), resourceName(r), err)
			}
			items = append(items, v)
		}
		fmt.Fprintf(&out, "# %s (%d)\n", TypeShort(t), len(list))
		enc := yaml.NewEncoder(&out)
		enc.SetIndent(2)
		if err := enc.Encode(map[string]any{TypeShort(t) + "s": items}); err != nil {
			return nil, err
		}
		_ = enc.Close()
		out.WriteString("---\n")
	}
	return out.Bytes(), nil
}

// protoToPlain converts a message (Any fields resolved with @type) into
// plain maps for YAML, with inline private keys redacted.
func protoToPlain(m proto.Message) (any, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	redactPrivateKeys(v)
	return v, nil
}

func marshalYAML(v any) ([]byte, error) {
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
