package xds_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

// rpcs is a batch of Health/Check calls to xds:///Target.
type rpcs struct {
	Target      string            // host, without the xds:/// scheme
	N           int               // calls (default 1)
	Concurrency int               // calls in flight at once (default 1)
	Metadata    map[string]string // request metadata
	Deadline    time.Duration     // per call (default 5 s)
	Fresh       bool              // on a new channel, closed afterwards
}

// tally is what a batch of calls did, in the same shape from both clients; error keys are
// gRPC code names (UNAVAILABLE, DEADLINE_EXCEEDED…).
type tally struct {
	OK        int            `json:"ok"`
	Backends  map[string]int `json:"backends"`
	Errors    map[string]int `json:"errors"`
	Messages  []string       `json:"messages"`
	LatencyMS []float64      `json:"latency_ms"`
	Error     string         `json:"error"` // the driver could not run the batch
}

func (t tally) failed() int {
	n := 0
	for _, v := range t.Errors {
		n += v
	}
	return n
}

func (t tally) String() string {
	return fmt.Sprintf("ok %d backends %v errors %v %q", t.OK, t.Backends, t.Errors, t.Messages)
}

// xdsClient is one proxyless gRPC implementation whose xDS client talks to the gateway
// through the test's ADS proxy.
type xdsClient interface {
	// Name is the subtest name: "grpc-go" or "grpc-js".
	Name() string
	// Short is a suffix for the objects a scenario creates for this client ("go", "js").
	Short() string
	// Nodes are the node ids of the client's open xDS streams.
	Nodes() []string
	Call(t testing.TB, r rpcs) tally
	// Start runs r.Concurrency loops of calls until Stop returns their tally.
	Start(t testing.TB, loop string, r rpcs)
	Stop(t testing.TB, loop string) tally
	// Close closes the target's channel (a later call opens a new one).
	Close(t testing.TB, target string)
}

// codeNames are gRPC's canonical code names, as grpc-js reports them.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

// goClient is grpc-go's xDS resolver: every channel has its own xDS client and ADS stream
// (grpc-go keys xDS clients by target), each with its own node id.
type goClient struct {
	owner testing.TB // the test function: channels live until it ends
	proxy string
	mu    sync.Mutex
	seq   int
	chans map[string]*goChannel
	loops map[string]*goLoop
}

type goChannel struct {
	cc   *grpc.ClientConn
	node string
}

type goLoop struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	t    tally
}

func newGoClient(owner testing.TB, proxy string) *goClient {
	return &goClient{owner: owner, proxy: proxy, chans: map[string]*goChannel{}, loops: map[string]*goLoop{}}
}

func (c *goClient) Name() string  { return "grpc-go" }
func (c *goClient) Short() string { return "go" }

func (c *goClient) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, ch := range c.chans {
		ids = append(ids, ch.node)
	}
	sort.Strings(ids)
	return ids
}

func (c *goClient) dial(target string) *goChannel {
	c.mu.Lock()
	c.seq++
	node := fmt.Sprintf("grpc-go-%s-%d", c.owner.Name(), c.seq)
	c.mu.Unlock()
	return &goChannel{cc: xdstest.Dial(c.owner, c.proxy, node, target), node: node}
}

func (c *goClient) channel(target string) *goChannel {
	c.mu.Lock()
	ch := c.chans[target]
	c.mu.Unlock()
	if ch != nil {
		return ch
	}
	ch = c.dial(target)
	c.mu.Lock()
	c.chans[target] = ch
	c.mu.Unlock()
	return ch
}

// callOnce makes one call and records it in t (under mu).
func goCallOnce(cc *grpc.ClientConn, r rpcs, mu *sync.Mutex, t *tally) {
	d := r.Deadline
	if d <= 0 {
		d = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for k, v := range r.Metadata {
		ctx = metadata.AppendToOutgoingContext(ctx, k, v)
	}
	var md metadata.MD
	start := time.Now()
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
	ms := float64(time.Since(start).Microseconds()) / 1000
	mu.Lock()
	defer mu.Unlock()
	t.LatencyMS = append(t.LatencyMS, ms)
	note := func(key, msg string) {
		t.Errors[key]++
		if len(t.Messages) < 10 && !contains(t.Messages, msg) {
			t.Messages = append(t.Messages, msg)
		}
	}
	switch {
	case err != nil:
		s := status.Convert(err)
		name := codeNames[s.Code()]
		if name == "" {
			name = s.Code().String()
		}
		note(name, name+": "+s.Message())
	case res.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		note("NOT_SERVING_RESPONSE", "health status "+res.GetStatus().String())
	default:
		t.OK++
		be := ""
		if v := md.Get(xdstest.IdentityHeader); len(v) > 0 {
			be = v[0]
		}
		t.Backends[be]++
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func newTally() tally { return tally{Backends: map[string]int{}, Errors: map[string]int{}} }

func (c *goClient) Call(_ testing.TB, r rpcs) tally {
	var ch *goChannel
	if r.Fresh {
		ch = c.dial(r.Target)
		defer ch.cc.Close()
	} else {
		ch = c.channel(r.Target)
	}
	n := r.N
	if n == 0 {
		n = 1
	}
	workers := max(1, min(r.Concurrency, n))
	out := newTally()
	var mu sync.Mutex
	next := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				goCallOnce(ch.cc, r, &mu, &out)
			}
		}()
	}
	wg.Wait()
	return out
}

func (c *goClient) Start(t testing.TB, loop string, r rpcs) {
	t.Helper()
	ch := c.channel(r.Target)
	l := &goLoop{stop: make(chan struct{}), t: newTally()}
	c.mu.Lock()
	if c.loops[loop] != nil {
		c.mu.Unlock()
		t.Fatalf("loop %s is running", loop)
	}
	c.loops[loop] = l
	c.mu.Unlock()
	for w := 0; w < max(1, r.Concurrency); w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				goCallOnce(ch.cc, r, &l.mu, &l.t)
			}
		}()
	}
}

func (c *goClient) Stop(t testing.TB, loop string) tally {
	t.Helper()
	c.mu.Lock()
	l := c.loops[loop]
	delete(c.loops, loop)
	c.mu.Unlock()
	if l == nil {
		t.Fatalf("no loop %s", loop)
	}
	close(l.stop)
	l.wg.Wait()
	return l.t
}

func (c *goClient) Close(_ testing.TB, target string) {
	c.mu.Lock()
	ch := c.chans[target]
	delete(c.chans, target)
	c.mu.Unlock()
	if ch != nil {
		_ = ch.cc.Close()
	}
}

// jsDir is the Node client's folder (package.json, the committed lockfile, client.js).
const jsDir = "grpcjs"

// jsClient is @grpc/grpc-js-xds in a Node process (grpcjs/client.js), driven over its
// stdin and stdout one JSON line at a time. The process has one xDS client, so one node
// and one ADS stream shared by all its channels.
type jsClient struct {
	node   string
	cmd    *exec.Cmd
	stdin  *os.File
	lines  chan string
	stderr *lockedBuffer
	exited chan struct{}
	mu     sync.Mutex
	// broken is set once a reply did not come in time: a late reply would answer the next
	// request, so every later request fails at once.
	broken string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() < 1<<20 {
		b.b.Write(p)
	}
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startJSClient starts the Node client with a bootstrap naming the xDS server at addr; the
// process ends at test cleanup (stdin closed, then killed if it lingers).
func startJSClient(t testing.TB, addr, node string) *jsClient {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed: make test-deps installs Node.js and the client's packages (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "@grpc", "grpc-js-xds", "package.json")); err != nil {
		t.Fatalf("the Node client's packages are not installed: run make test-deps (npm ci in e2e/xds/%s): %v", jsDir, err)
	}
	boot := xdstest.Bootstrap(addr, node, "edge")
	return startNodeDriver(t, jsDir, "client.js", node, "GRPC_XDS_BOOTSTRAP_CONFIG="+string(boot), "GRPC_XDS_BOOTSTRAP=")
}

// startNodeDriver starts node script in dir as a jsClient of the node id, with env added.
func startNodeDriver(t testing.TB, dir, script, node string, env ...string) *jsClient {
	t.Helper()
	cmd := exec.Command("node", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &jsClient{node: node, cmd: cmd, stdin: inW, lines: make(chan string, 16), stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	inR.Close()
	outW.Close()
	go func() {
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() { _ = cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.close)
	var ready struct {
		Ready    bool              `json:"ready"`
		Node     string            `json:"node"`
		Versions map[string]string `json:"versions"`
	}
	c.read(t, 30*time.Second, &ready)
	if !ready.Ready {
		t.Fatalf("grpc-js client did not start: stderr:\n%s", c.stderr.String())
	}
	t.Logf("grpc-js client: node %s, %v", ready.Node, ready.Versions)
	return c
}

func (c *jsClient) close() {
	_ = c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
}

// read waits for the next line and decodes it; a client that says nothing within timeout,
// exits or answers an error fails the test with its stderr.
func (c *jsClient) read(t testing.TB, timeout time.Duration, out any) {
	t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.exited
			t.Fatalf("grpc-js client exited (%v); stderr:\n%s", c.cmd.ProcessState, c.stderr.String())
		}
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("grpc-js client: bad reply %q: %v; stderr:\n%s", line, err, c.stderr.String())
		}
		if e.Error != "" {
			t.Fatalf("grpc-js client: %s; stderr:\n%s", e.Error, c.stderr.String())
		}
		// Strictly: a reply of another shape than the request's (a field unknown to it) is a
		// driver out of step with this harness, not an answer.
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(out); err != nil {
			t.Fatalf("grpc-js client: reply %q: %v", line, err)
		}
	case <-time.After(timeout):
		c.broken = fmt.Sprintf("an earlier request got no answer within %v", timeout)
		t.Fatalf("grpc-js client gave no answer within %v; stderr:\n%s", timeout, c.stderr.String())
	}
}

// do sends one request and decodes its reply.
func (c *jsClient) do(t testing.TB, req map[string]any, timeout time.Duration, out any) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != "" {
		t.Fatalf("grpc-js client unusable: %s", c.broken)
	}
	raw, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.stdin.Write(append(raw, '\n')); err != nil {
		if errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EPIPE) {
			t.Fatalf("grpc-js client is gone; stderr:\n%s", c.stderr.String())
		}
		t.Fatal(err)
	}
	c.read(t, timeout, out)
}

func (c *jsClient) Name() string    { return "grpc-js" }
func (c *jsClient) Short() string   { return "js" }
func (c *jsClient) Nodes() []string { return []string{c.node} }

func jsRequest(op string, r rpcs) map[string]any {
	d := r.Deadline
	if d <= 0 {
		d = 5 * time.Second
	}
	req := map[string]any{"op": op, "target": "xds:///" + r.Target, "n": max(r.N, 1), "concurrency": max(r.Concurrency, 1),
		"deadline_ms": d.Milliseconds(), "fresh": r.Fresh}
	if len(r.Metadata) > 0 {
		req["metadata"] = r.Metadata
	}
	return req
}

// batchTimeout bounds how long a batch may take: every call at its deadline, one at a time
// per worker, plus a margin.
func batchTimeout(r rpcs) time.Duration {
	d := r.Deadline
	if d <= 0 {
		d = 5 * time.Second
	}
	per := (max(r.N, 1) + max(r.Concurrency, 1) - 1) / max(r.Concurrency, 1)
	return time.Duration(per)*d + 20*time.Second
}

func (c *jsClient) Call(t testing.TB, r rpcs) tally {
	t.Helper()
	out := newTally()
	c.do(t, jsRequest("call", r), batchTimeout(r), &out)
	// Every call asked for is in the reply, answered or failed: a reply that accounts for
	// fewer (an empty "{}" among them) would pass any "no call answered" check.
	if n := max(r.N, 1); out.OK+out.failed() != n || len(out.LatencyMS) != n {
		t.Fatalf("grpc-js client: %d calls asked, the reply accounts for %d (%d latencies): %s", n, out.OK+out.failed(), len(out.LatencyMS), out)
	}
	return out
}

func (c *jsClient) Start(t testing.TB, loop string, r rpcs) {
	t.Helper()
	req := jsRequest("start", r)
	req["loop"] = loop
	req["workers"] = max(r.Concurrency, 1)
	var res struct {
		Started string `json:"started"`
	}
	c.do(t, req, 10*time.Second, &res)
	if res.Started != loop {
		t.Fatalf("loop %s did not start: %+v", loop, res)
	}
}

func (c *jsClient) Close(t testing.TB, target string) {
	t.Helper()
	var res struct {
		Closed bool `json:"closed"`
	}
	c.do(t, map[string]any{"op": "close", "target": "xds:///" + target}, 10*time.Second, &res)
	if !res.Closed {
		t.Fatalf("grpc-js client did not close the channel to %s", target)
	}
}

func (c *jsClient) Stop(t testing.TB, loop string) tally {
	t.Helper()
	out := newTally()
	c.do(t, map[string]any{"op": "stop", "loop": loop}, 30*time.Second, &out)
	if out.OK+out.failed() != len(out.LatencyMS) {
		t.Fatalf("grpc-js client: loop %s reply accounts for %d calls but %d latencies: %s", loop, out.OK+out.failed(), len(out.LatencyMS), out)
	}
	return out
}
