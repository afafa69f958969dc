package model

import (
	"reflect"
	"testing"
)

// Every repeated member name is found by its path, names compared unescaped; strings that
// hold quotes, braces or commas, and repeats in different objects, are not repeats.
func TestDuplicateKeys(t *testing.T) {
	for doc, want := range map[string][]string{
		`{"a":1,"b":2}`:                              nil,
		`{"a":1,"a":2}`:                              {"a"},
		`{"id":"x","\u0069d":"y"}`:                   {"id"},
		`{"a\"b":1,"a\"b":2}`:                        {`a"b`},
		`{"a":{"x":1},"b":{"x":1}}`:                  nil,
		`{"a":[{"x":1,"x":2},{"x":1}],"a":[]}`:       {"a[0].x", "a"},
		`{"s":"{\"x\":1,\"x\":2}","t":"a,b:c]}"}`:    nil,
		`{"m":{"k":[1,[2,{"z":1,"z":2}]],"k":null}}`: {"m.k[1][1].z", "m.k"},
		`[{"a":1,"a":2}]`:                            {"[0].a"},
		` { "a" : 1 , "a" : 2 } `:                    {"a"},
	} {
		var got []string
		for _, e := range DuplicateKeys([]byte(doc)) {
			got = append(got, e.Field)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %q, want %q", doc, got, want)
		}
	}
}
