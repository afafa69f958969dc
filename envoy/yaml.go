package envoy

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// ToJSON renders a message as canonical JSON (protojson, then re-encoded with sorted keys).
func ToJSON(m proto.Message) ([]byte, error) {
	v, err := toValue(m)
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(v, "", "  ")
}

// ToYAML renders a message as YAML (protojson field names).
func ToYAML(m proto.Message) ([]byte, error) {
	v, err := toValue(m)
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(v)
}

func toValue(m proto.Message) (any, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var v any
	err = json.Unmarshal(raw, &v)
	return v, err
}

// ResourcesValue renders resources as a plain value for YAML/JSON output (golden files,
// debugging endpoints): {listeners, routes, clusters, endpoints, route_errors}.
func ResourcesValue(r *Resources) (map[string]any, error) {
	out := map[string]any{}
	add := func(key string, ms []proto.Message) error {
		if len(ms) == 0 {
			return nil
		}
		var list []any
		for _, m := range ms {
			v, err := toValue(m)
			if err != nil {
				return err
			}
			list = append(list, v)
		}
		out[key] = list
		return nil
	}
	kinds := r.ByKind()
	ls, rs, cs, es := kinds[0], kinds[1], kinds[2], kinds[3]
	for _, kv := range []struct {
		k  string
		ms []proto.Message
	}{{"listeners", ls}, {"routes", rs}, {"clusters", cs}, {"endpoints", es}} {
		if err := add(kv.k, kv.ms); err != nil {
			return nil, err
		}
	}
	if len(r.RouteErrors) > 0 {
		out["route_errors"] = r.RouteErrors
	}
	if len(r.Omitted) > 0 {
		out["omitted"] = r.Omitted
	}
	return out, nil
}
