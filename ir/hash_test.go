package ir

import (
	"reflect"
	"strings"
	"testing"
)

// fill sets every leaf of v to a non-zero value: pointers allocated, slices of one element,
// maps of one entry.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(v.Field(i))
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("s")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	default:
		panic("fill: unhandled kind " + v.Kind().String())
	}
}

// leaves lists the paths of the leaves of a filled value.
func leaves(v reflect.Value, path string, out *[]string) {
	switch v.Kind() {
	case reflect.Pointer:
		leaves(v.Elem(), path, out)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			leaves(v.Field(i), path+"."+v.Type().Field(i).Name, out)
		}
	case reflect.Slice:
		leaves(v.Index(0), path+"[0]", out)
	default:
		*out = append(*out, path)
	}
}

// mutate changes the leaf at path.
func mutate(v reflect.Value, path string) {
	for path != "" {
		for v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if strings.HasPrefix(path, "[0]") {
			v, path = v.Index(0), path[3:]
			continue
		}
		name := strings.TrimPrefix(path, ".")
		if i := strings.IndexAny(name, ".["); i >= 0 {
			name, path = name[:i], name[i:]
		} else {
			path = ""
		}
		v = v.FieldByName(name)
	}
	switch v.Kind() {
	case reflect.Map:
		k := reflect.New(v.Type().Key()).Elem()
		k.SetString("other")
		v.SetMapIndex(k, reflect.New(v.Type().Elem()).Elem())
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	default:
		v.SetUint(v.Uint() + 1)
	}
}

// checkCovered fails for every leaf field of T that does not change the hash: a field added
// to the IR must be added to the Hasher, or memoized resources would go stale.
func checkCovered[T any](t *testing.T, hash func(*T) uint64, skip map[string]bool) {
	t.Helper()
	base := new(T)
	fill(reflect.ValueOf(base).Elem())
	want := hash(base)
	var paths []string
	leaves(reflect.ValueOf(base).Elem(), "", &paths)
	for _, p := range paths {
		x := new(T)
		fill(reflect.ValueOf(x).Elem())
		if hash(x) != want {
			t.Fatalf("hash is not deterministic")
		}
		mutate(reflect.ValueOf(x).Elem(), p)
		if changed := hash(x) != want; changed == skip[p] {
			t.Errorf("field %s: hash changed=%v", p, changed)
		}
	}
}

func TestHashCoversEveryField(t *testing.T) {
	h := NewHasher()
	checkCovered(t, func(r *Route) uint64 { h.Reset(); h.Route(r); return h.Sum64() }, nil)
	checkCovered(t, func(c *Cluster) uint64 { h.Reset(); h.Cluster(c, true); return h.Sum64() }, nil)
	checkCovered(t, func(c *Cluster) uint64 { h.Reset(); h.Cluster(c, false); return h.Sum64() },
		map[string]bool{".Endpoints[0].Host": true, ".Endpoints[0].Port": true, ".Endpoints[0].Weight": true})
}

func TestHashSeparatesFields(t *testing.T) {
	h := NewHasher()
	sum := func(r *Route) uint64 { h.Reset(); h.Route(r); return h.Sum64() }
	a := &Route{Name: "ab", RouteID: "c"}
	b := &Route{Name: "a", RouteID: "bc"}
	if sum(a) == sum(b) {
		t.Fatal("adjacent strings collide")
	}
	c := &Route{RequestHeaders: HeaderOps{Remove: []string{"x"}}}
	d := &Route{ResponseHeaders: HeaderOps{Remove: []string{"x"}}}
	if sum(c) == sum(d) {
		t.Fatal("request and response headers collide")
	}
}
