package xds_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// fatalRecorder is a testing.TB whose Fatal ends only the goroutine calling it, recording
// why: what the harness does with a reply is observed without failing the test.
type fatalRecorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.msg = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *fatalRecorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

func (r *fatalRecorder) Errorf(format string, args ...any) { r.Fatalf(format, args...) }

// fatalOf runs fn with a recorder and returns what it failed with ("" if it returned).
func fatalOf(t *testing.T, fn func(tb testing.TB)) string {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(rec)
	}()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.msg
}

// fakeDriver answers the ready line, then each request with the next of its replies
// (EXIT: the process exits instead).
const fakeDriver = `'use strict';
const replies = JSON.parse(process.env.FAKE_REPLIES);
let i = 0;
process.stdout.write(JSON.stringify({ ready: true, node: process.version, versions: {} }) + '\n');
require('readline').createInterface({ input: process.stdin }).on('line', () => {
  const r = replies[i++];
  if (r === 'EXIT') {
    process.exit(3);
  }
  process.stdout.write(r + '\n');
});
`

// A reply from the Node driver that is not a full account of the request fails the test:
// a crashed process, a line that is not JSON or of another shape, an error, or a tally
// that does not count every call asked for. Only a complete reply is returned.
func TestJSClientRejectsBadReplies(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed: make test-deps installs it (%v)", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fake.js"), []byte(fakeDriver), 0o644); err != nil {
		t.Fatal(err)
	}
	good := `{"ok":2,"backends":{"m1":2},"errors":{"UNAVAILABLE":1},"messages":["UNAVAILABLE: x"],"latency_ms":[1,2,3]}`
	cases := []struct {
		name, reply, want string
	}{
		{"a complete reply", good, ""},
		{"the process exits", "EXIT", "exited"},
		{"a line that is not JSON", `{"ok":3,`, "bad reply"},
		{"an empty object", `{}`, "accounts for 0"},
		{"fewer calls than asked", `{"ok":2,"backends":{"m1":2},"errors":{},"messages":[],"latency_ms":[1,2]}`, "accounts for 2"},
		{"latencies missing", `{"ok":3,"backends":{"m1":3},"errors":{},"messages":[],"latency_ms":[]}`, "0 latencies"},
		{"a field the harness does not know", `{"ok":3,"backends":{"m1":3},"errors":{},"messages":[],"latency_ms":[1,2,3],"oks":3}`, "unknown field"},
		{"an error", `{"error":"call: target is required"}`, "target is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			replies, _ := json.Marshal([]string{tc.reply, good})
			var got tally
			msg := fatalOf(t, func(tb testing.TB) {
				c := startNodeDriver(tb, dir, "fake.js", "fake", "FAKE_REPLIES="+string(replies))
				got = c.Call(tb, rpcs{Target: "h.test", N: 3})
			})
			switch {
			case tc.want == "" && msg != "":
				t.Fatalf("a complete reply failed: %s", msg)
			case tc.want == "" && (got.OK != 2 || got.Backends["m1"] != 2 || got.Errors["UNAVAILABLE"] != 1):
				t.Fatalf("a complete reply decoded as %s", got)
			case tc.want != "" && !strings.Contains(msg, tc.want):
				t.Fatalf("reply %s: the harness said %q, want a failure saying %q", tc.reply, msg, tc.want)
			}
		})
	}
	// A client whose reply came late is unusable: the late reply would answer the next request.
	t.Run("after a timeout", func(t *testing.T) {
		replies, _ := json.Marshal([]string{good, good})
		msg := fatalOf(t, func(tb testing.TB) {
			c := startNodeDriver(tb, dir, "fake.js", "fake", "FAKE_REPLIES="+string(replies))
			c.broken = "an earlier request got no answer"
			c.Call(tb, rpcs{Target: "h.test", N: 3})
		})
		if !strings.Contains(msg, "unusable") {
			t.Fatalf("a broken client answered: %q", msg)
		}
	})
}
