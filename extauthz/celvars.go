package extauthz

import (
	"fmt"
	"net/url"
	"reflect"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// fieldMap is a CEL map(string, dyn) over a fixed set of keys whose values are produced on
// demand, so evaluating `request.method == "GET"` builds no Go map and copies no headers.
type fieldMap struct {
	keys []string
	get  func(key string) ref.Val
}

var (
	requestKeys  = []string{"method", "path", "query", "headers", "host", "ip", "country", "scheme", "id"}
	identityKeys = []string{"user_id", "tenant", "roles", "scopes", "api_key_id", "method", "claims"}
)

func (m *fieldMap) find(k string) (ref.Val, bool) {
	for _, key := range m.keys {
		if key == k {
			return m.get(k), true
		}
	}
	return nil, false
}

// ConvertToNative builds a map[string]any (only used when a value leaves CEL).
func (m *fieldMap) ConvertToNative(t reflect.Type) (any, error) {
	out := make(map[string]any, len(m.keys))
	for _, k := range m.keys {
		out[k] = m.get(k).Value()
	}
	if reflect.TypeOf(out).AssignableTo(t) {
		return out, nil
	}
	return nil, fmt.Errorf("cannot convert map to %v", t)
}

func (m *fieldMap) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.MapType:
		return m
	case types.TypeType:
		return types.MapType
	}
	return types.NewErr("type conversion error from map to '%s'", t)
}

func (m *fieldMap) Equal(other ref.Val) ref.Val { return types.Bool(other == ref.Val(m)) }
func (m *fieldMap) Type() ref.Type              { return types.MapType }
func (m *fieldMap) Value() any                  { return m }
func (m *fieldMap) Size() ref.Val               { return types.Int(len(m.keys)) }

func (m *fieldMap) Contains(key ref.Val) ref.Val {
	_, ok := m.Find(key)
	return types.Bool(ok)
}

func (m *fieldMap) Get(key ref.Val) ref.Val {
	v, ok := m.Find(key)
	if !ok {
		return types.NewErr("no such key: %v", key)
	}
	return v
}

func (m *fieldMap) Find(key ref.Val) (ref.Val, bool) {
	s, ok := key.(types.String)
	if !ok {
		return nil, false
	}
	return m.find(string(s))
}

func (m *fieldMap) Iterator() traits.Iterator {
	return types.NewStringList(types.DefaultTypeAdapter, m.keys).Iterator()
}

var emptyStrings = map[string]string{}

// requestVal is the `request` variable.
func requestVal(r *Request, d *Decision) ref.Val {
	a := types.DefaultTypeAdapter
	return &fieldMap{keys: requestKeys, get: func(k string) ref.Val {
		switch k {
		case "method":
			return types.String(r.Method)
		case "path":
			return types.String(r.Path)
		case "query":
			q := map[string]string{}
			if r.RawQuery != "" {
				if vals, err := url.ParseQuery(r.RawQuery); err == nil {
					for k, v := range vals {
						if len(v) > 0 {
							q[k] = v[0]
						}
					}
				}
			}
			return types.NewStringStringMap(a, q)
		case "headers":
			h := r.Headers
			if h == nil {
				h = emptyStrings
			}
			return types.NewStringStringMap(a, h)
		case "host":
			return types.String(r.Host)
		case "ip":
			if d.ClientIP.IsValid() {
				return types.String(d.ClientIP.String())
			}
			return types.String("")
		case "country":
			return types.String(d.Country)
		case "scheme":
			return types.String(r.Scheme)
		case "id":
			return types.String(r.ID)
		}
		return types.NewErr("no such key: %s", k)
	}}
}

var emptyClaims = map[string]any{}

// identityVal is the `identity` variable.
func identityVal(id *Identity) ref.Val {
	a := types.DefaultTypeAdapter
	return &fieldMap{keys: identityKeys, get: func(k string) ref.Val {
		switch k {
		case "user_id":
			return types.String(id.UserID)
		case "tenant":
			return types.String(id.Tenant)
		case "roles":
			return types.NewStringList(a, id.Roles)
		case "scopes":
			return types.NewStringList(a, id.Scopes)
		case "api_key_id":
			return types.String(id.APIKeyID)
		case "method":
			if id.Method == "" {
				return types.String(MethodNone)
			}
			return types.String(id.Method)
		case "claims":
			if id.Claims == nil {
				return a.NativeToValue(emptyClaims)
			}
			return a.NativeToValue(id.Claims)
		}
		return types.NewErr("no such key: %s", k)
	}}
}
