package manage

import (
	"bytes"
	"encoding/json"
	"testing"
)

// The examples of RFC 7396 Appendix A, each a target, a patch and the result.
func TestMergePatchRFC7396Examples(t *testing.T) {
	cases := [][3]string{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		// Numbers are carried exactly, not through float64.
		{`{"n":1}`, `{"m":18446744073709551615}`, `{"m":18446744073709551615,"n":1}`},
	}
	dec := func(s string) any {
		d := json.NewDecoder(bytes.NewReader([]byte(s)))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		return v
	}
	for _, c := range cases {
		got, err := json.Marshal(mergePatch(dec(c[0]), dec(c[1])))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(dec(c[2]))
		if !bytes.Equal(got, want) {
			t.Errorf("target %s patch %s: got %s, want %s", c[0], c[1], got, want)
		}
	}
}
