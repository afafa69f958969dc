package waf

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	txhttp "github.com/corazawaf/coraza/v3/http"

	"github.com/api-gateway/api-gateway/model"
)

// benchRequest is one of the benchmark's requests, built both as an Envoy CheckRequest
// and as a net/http request for Coraza's middleware.
type benchRequest struct {
	name    string
	method  string
	uri     string
	headers [][2]string
	body    []byte
}

func benchRequests() []benchRequest { return saltedBenchRequests("") }

// saltedBenchRequests builds the benchmark requests with salt appended to every
// parameter value (and the User-Agent), so no value repeats across salts.
func saltedBenchRequests(salt string) []benchRequest {
	common := [][2]string{
		{"Host", "api.example.com"},
		{"User-Agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36" + salt},
		{"Accept", "application/json, text/plain, */*"},
		{"Accept-Language", "en-US,en;q=0.9,de;q=0.8"},
		{"Accept-Encoding", "gzip, deflate, br"},
		{"Authorization", "Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl"},
		{"X-Forwarded-For", "203.0.113.7"},
	}
	with := func(extra ...[2]string) [][2]string { return append(slices.Clone(common), extra...) }

	// ~1 KB JSON document.
	var items []string
	for i := 0; len(strings.Join(items, ",")) < 820; i++ {
		items = append(items, fmt.Sprintf(`{"sku":"SKU-%04d%s","name":"Item %d%s","qty":%d,"price":%d.99}`, i, salt, i, salt, i%5+1, 10+i))
	}
	jsonBody := []byte(fmt.Sprintf(`{"customer":{"id":"c-1029%[2]s","name":"José Müller%[2]s","email":"jose@example.com"},"items":[%[1]s],"note":"Leave at the door, it's fine%[2]s"}`, strings.Join(items, ","), salt))

	// ~10 KB urlencoded form.
	form := url.Values{}
	for i := 0; len(form.Encode()) < 10*1024-200; i++ {
		form.Add(fmt.Sprintf("field_%03d", i), fmt.Sprintf("value number %d with some ordinary text, O'Brien & sons%s", i, salt))
	}
	formBody := []byte(form.Encode())

	return []benchRequest{
		{name: "GET", method: "GET", uri: "/api/v1/users/42/orders?page=2&limit=50&sort=-created_at&q=o'reilly" + url.QueryEscape(salt), headers: common},
		{name: "JSON1K", method: "POST", uri: "/api/v1/orders", body: jsonBody,
			headers: with([2]string{"Content-Type", "application/json"}, [2]string{"Content-Length", fmt.Sprint(len(jsonBody))})},
		{name: "Form10K", method: "POST", uri: "/account/profile", body: formBody,
			headers: with([2]string{"Content-Type", "application/x-www-form-urlencoded"}, [2]string{"Content-Length", fmt.Sprint(len(formBody))})},
	}
}

func (br benchRequest) raw() rawRequest {
	return rawRequest{method: br.method, uri: br.uri, version: "HTTP/1.1", headers: br.headers, body: br.body,
		srcIP: "203.0.113.7", srcPort: 51234, dstIP: "10.0.0.2", dstPort: 8080}
}

func (br benchRequest) httpRequest() *http.Request {
	r := httptest.NewRequest(br.method, br.uri, bytes.NewReader(br.body))
	for _, kv := range br.headers {
		if kv[0] == "Host" {
			r.Host = kv[1]
			continue
		}
		r.Header.Add(kv[0], kv[1])
	}
	r.RemoteAddr = "203.0.113.7:51234"
	return r
}

// cpuClock is the process's CPU time (user + system) since a start: on a shared machine
// the wall time of an operation depends on everyone else's load, its CPU time much less.
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{processCPU()} }

// report adds cpu-us/op: the process's CPU time per operation, GC included.
func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64((processCPU()-c.start).Microseconds())/float64(b.N), "cpu-us/op")
}

// latencies records per-operation durations and reports p50/p99.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	p := func(q float64) float64 { return float64(l[int(q*float64(len(l)-1))].Microseconds()) / 1000 }
	b.ReportMetric(p(0.50), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
}

// BenchmarkInspect measures WAF.Inspect (paranoia 1, block mode, default settings) on a
// GET, a 1 KB JSON POST and a 10 KB urlencoded form POST.
func BenchmarkInspect(b *testing.B) {
	reg := NewRegistry(RegistryOptions{Logger: slog.New(slog.DiscardHandler)})
	w, err := reg.Get(&model.WAFSettings{})
	if err != nil {
		b.Fatal(err)
	}
	for _, br := range benchRequests() {
		req := checkRequest(br.raw(), "bench")
		b.Run(br.name, func(b *testing.B) {
			if v := w.Inspect(context.Background(), req); !v.Allowed {
				b.Fatalf("benign request blocked: %+v", v)
			}
			lat := make(latencies, 0, 1024)
			b.ReportAllocs()
			cpu := startCPU()
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				w.Inspect(context.Background(), req)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			cpu.report(b)
			lat.report(b)
		})
	}
}

// BenchmarkInspectUnderDeadline is BenchmarkInspect with the context a Check has in
// production (Envoy's gRPC deadline): the transaction is registered for the deadline
// checkpoints (deadline.go) and every checkpoint asks the context.
func BenchmarkInspectUnderDeadline(b *testing.B) {
	reg := NewRegistry(RegistryOptions{Logger: slog.New(slog.DiscardHandler)})
	w, err := reg.Get(&model.WAFSettings{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	for _, br := range benchRequests() {
		req := checkRequest(br.raw(), "bench")
		b.Run(br.name, func(b *testing.B) {
			if v := w.Inspect(ctx, req); !v.Allowed {
				b.Fatalf("benign request blocked: %+v", v)
			}
			b.ReportAllocs()
			cpu := startCPU()
			b.ResetTimer()
			for b.Loop() {
				w.Inspect(ctx, req)
			}
			b.StopTimer()
			cpu.report(b)
		})
	}
}

// BenchmarkLargeFormsPastDeadline measures how long four concurrent 128 KiB forms at
// paranoia 2 keep the WAF busy when their checks have a deadline of deadline-ms: without
// the deadline checkpoints each takes its full time (~1.7 s of CPU alone) whatever Envoy's
// timeout; with them each stops within a CRS file of the deadline. It reports the wall
// time of the batch (batch-ms) next to the deadline.
func BenchmarkLargeFormsPastDeadline(b *testing.B) {
	reg := NewRegistry(RegistryOptions{Logger: slog.New(slog.DiscardHandler)})
	w, err := reg.Get(&model.WAFSettings{ParanoiaLevel: 2})
	if err != nil {
		b.Fatal(err)
	}
	form := url.Values{}
	for i := 0; len(form.Encode()) < 128<<10; i++ {
		// Long values: under Coraza's 1,000 arguments (a form over it is refused at once).
		form.Add(fmt.Sprintf("field_%03d", i), fmt.Sprintf("value number %d: %s", i, strings.Repeat("some ordinary text, O'Brien & sons; ", 8)))
	}
	body := []byte(form.Encode())
	br := benchRequest{name: "form128k", method: "POST", uri: "/account/profile", body: body,
		headers: [][2]string{{"Host", "api.example.com"}, {"Content-Type", "application/x-www-form-urlencoded"}, {"Content-Length", fmt.Sprint(len(body))}}}
	req := checkRequest(br.raw(), "bench")
	const deadline = 300 * time.Millisecond
	var batch latencies
	for b.Loop() {
		t0 := time.Now()
		done := make(chan Verdict, 4)
		for range 4 {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				done <- w.Inspect(ctx, req)
			}()
		}
		for range 4 {
			<-done
		}
		batch = append(batch, time.Since(t0))
	}
	b.ReportMetric(float64(deadline.Milliseconds()), "deadline-ms")
	b.ReportMetric(float64(slices.Max(batch).Milliseconds()), "batch-ms")
}

// middlewareWAF is Coraza with CRS as its documentation sets it up for the net/http
// middleware: coraza.conf-recommended (engine On), crs-setup, every CRS rule file, with
// the gateway's allowed methods and content types so verdicts compare like for like.
const gatewayCRSDefaults = `SecAction "id:900200,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'"
SecAction "id:900220,phase:1,pass,t:none,nolog,setvar:'tx.allowed_request_content_type=|application/x-www-form-urlencoded| |multipart/form-data| |text/xml| |application/xml| |application/soap+xml| |application/json| |application/merge-patch+json| |application/json-patch+json| |application/problem+json| |application/cloudevents+json|'"`

func middlewareWAF(tb testing.TB) coraza.WAF {
	tb.Helper()
	w, err := coraza.NewWAF(coraza.NewWAFConfig().
		WithRootFS(coreruleset.FS).
		WithDirectives("Include @coraza.conf-recommended").
		WithDirectives("SecRuleEngine On").
		WithDirectives("Include @crs-setup.conf.example").
		WithDirectives(gatewayCRSDefaults).
		WithDirectives("Include @owasp_crs/*.conf"))
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

// BenchmarkCorazaMiddleware is the baseline: the same requests through Coraza's own
// net/http middleware (httptest), same paranoia level.
func BenchmarkCorazaMiddleware(b *testing.B) {
	h := txhttp.WrapHandler(middlewareWAF(b), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	for _, br := range benchRequests() {
		b.Run(br.name, func(b *testing.B) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, br.httpRequest())
			if rec.Code != http.StatusOK {
				b.Fatalf("benign request got %d", rec.Code)
			}
			lat := make(latencies, 0, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				req := br.httpRequest()
				rec := httptest.NewRecorder()
				b.StartTimer()
				t0 := time.Now()
				h.ServeHTTP(rec, req)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			lat.report(b)
		})
	}
}

// BenchmarkInspectVsMiddleware runs each request through Inspect and through Coraza's
// middleware alternately in one loop, so both see the same machine load, and reports
// p50/p99 of each and the p50 ratio (middleware / Inspect). The cold variants give every
// iteration fresh parameter values, so no result is reused across requests.
func BenchmarkInspectVsMiddleware(b *testing.B) {
	reg := NewRegistry(RegistryOptions{Logger: slog.New(slog.DiscardHandler)})
	w, err := reg.Get(&model.WAFSettings{})
	if err != nil {
		b.Fatal(err)
	}
	h := txhttp.WrapHandler(middlewareWAF(b), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	for i, name := range []string{"GET", "JSON1K", "Form10K"} {
		for _, cold := range []bool{false, true} {
			sub := name
			if cold {
				sub += "-cold"
			}
			b.Run(sub, func(b *testing.B) {
				var ours, theirs latencies
				n := 0
				warm := saltedBenchRequests("")[i]
				for b.Loop() {
					br := warm
					if cold {
						n++
						br = saltedBenchRequests(fmt.Sprintf(" r%d", n))[i]
					}
					req := checkRequest(br.raw(), "bench")
					t0 := time.Now()
					v := w.Inspect(context.Background(), req)
					ours = append(ours, time.Since(t0))
					hr, rec := br.httpRequest(), httptest.NewRecorder()
					t0 = time.Now()
					h.ServeHTTP(rec, hr)
					theirs = append(theirs, time.Since(t0))
					if !v.Allowed || rec.Code != http.StatusOK {
						b.Fatalf("benign request blocked: inspect %+v, middleware %d", v, rec.Code)
					}
				}
				slices.Sort(ours)
				slices.Sort(theirs)
				q := func(l latencies, f float64) float64 {
					return float64(l[int(f*float64(len(l)-1))].Microseconds()) / 1000
				}
				b.ReportMetric(q(ours, 0.5), "inspect-p50-ms")
				b.ReportMetric(q(ours, 0.99), "inspect-p99-ms")
				b.ReportMetric(q(theirs, 0.5), "middleware-p50-ms")
				b.ReportMetric(q(theirs, 0.99), "middleware-p99-ms")
				b.ReportMetric(q(theirs, 0.5)/q(ours, 0.5), "speedup-p50")
			})
		}
	}
}

// BenchmarkParanoiaPruning compares the paranoia level 1 ruleset with and without the
// rules of higher paranoia levels (paranoia.go), alternating in one loop, and reports
// p50/p99 of each and the p50 ratio (full / pruned).
func BenchmarkParanoiaPruning(b *testing.B) {
	cfg := ConfigFromSettings(&model.WAFSettings{})
	logger := slog.New(slog.DiscardHandler)
	pruned, err := Compile(cfg, logger)
	if err != nil {
		b.Fatal(err)
	}
	full, err := compile(cfg, maxParanoiaLevel, logger)
	if err != nil {
		b.Fatal(err)
	}
	for _, br := range benchRequests() {
		req := checkRequest(br.raw(), "bench")
		b.Run(br.name, func(b *testing.B) {
			var p, f latencies
			for b.Loop() {
				t0 := time.Now()
				vp := pruned.Inspect(context.Background(), req)
				p = append(p, time.Since(t0))
				t0 = time.Now()
				vf := full.Inspect(context.Background(), req)
				f = append(f, time.Since(t0))
				if !vp.Allowed || !vf.Allowed {
					b.Fatalf("benign request blocked: pruned %+v, full %+v", vp, vf)
				}
			}
			slices.Sort(p)
			slices.Sort(f)
			q := func(l latencies, x float64) float64 {
				return float64(l[int(x*float64(len(l)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(q(p, 0.5), "pruned-p50-ms")
			b.ReportMetric(q(p, 0.99), "pruned-p99-ms")
			b.ReportMetric(q(f, 0.5), "full-p50-ms")
			b.ReportMetric(q(f, 0.99), "full-p99-ms")
			b.ReportMetric(q(f, 0.5)/q(p, 0.5), "speedup-p50")
		})
	}
}
