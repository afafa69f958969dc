package manage_test

import (
	"testing"

	"github.com/api-gateway/api-gateway/manage"
)

// A key written twice in one mapping is refused (YAML says keys are unique): at the top
// level, where a second "routes:" used to be merged into the first without a word (the
// README refuses a section repeated across documents for the same reason), and inside an
// object, where the problem names the line of the second key and its field, not only the
// object's first line. Every duplicate is reported, and the file's other problems too.
func TestFileDuplicateKeysNameLineAndField(t *testing.T) {
	file := `routes:
  - id: a
    conditions: [{path_prefix: /a}]
    targets: [{host: 10.0.0.1, port: 80}]
tenants:
  - id: t1
    name: one
    metadata:
      team: x
      team: y
  - id: t2
    name: two
    name: deux
  - id: t3
    disabled: perhaps
routes:
  - id: b
    conditions: [{path_prefix: /b}]
    targets: [{host: 10.0.0.1, port: 80}]
`
	objs, probs := manage.ParseFile("dup.yaml", []byte(file))
	type key struct {
		line          int
		object, field string
	}
	got := map[key]bool{}
	for _, p := range probs {
		got[key{p.Line, p.Object, p.Field}] = true
	}
	for _, w := range []key{
		{16, "", "routes"},
		{10, "tenants/t1", "metadata.team"},
		{13, "tenants/t2", "name"},
		{15, "tenants/t3", "disabled"},
	} {
		if !got[w] {
			t.Errorf("missing %+v in:\n%v", w, probs)
		}
	}
	if len(probs) != 4 {
		t.Errorf("want 4 problems, got %d:\n%v", len(probs), probs)
	}
	_ = objs
}
