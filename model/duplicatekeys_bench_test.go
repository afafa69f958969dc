package model

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// wideBody is a body near the API's size limit: 30,000 metadata entries (about 500 KiB).
func wideBody() []byte {
	var b strings.Builder
	b.WriteString(`{"id":"t1","metadata":{`)
	for i := 0; i < 30000; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":"v%d"`, i, i)
	}
	b.WriteString(`}}`)
	return []byte(b.String())
}

// BenchmarkDuplicateKeysScan is the cost DuplicateKeys adds to every write; compare it with
// BenchmarkDuplicateKeysBaselineDecode (the generic decode DecodeStrict runs anyway) in the
// same run.
func BenchmarkDuplicateKeysScan(b *testing.B) {
	d := wideBody()
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		if errs := DuplicateKeys(d); len(errs) != 0 {
			b.Fatal(errs)
		}
	}
}

func BenchmarkDuplicateKeysBaselineDecode(b *testing.B) {
	d := wideBody()
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		var v any
		if err := json.Unmarshal(d, &v); err != nil {
			b.Fatal(err)
		}
	}
}
