package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

const omittedLogMsg = "routes not served to proxyless gRPC clients, by design (each route's status.xds says why)"

// omittedLogs is the server's log, read for the omitted-routes records.
type omittedLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *omittedLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

type omittedRecord struct {
	Level          string   `json:"level"`
	Group          string   `json:"group"`
	Revision       uint64   `json:"revision"`
	Count          int      `json:"count"`
	Routes         []string `json:"routes"`
	RoutesNotNamed int      `json:"routes_not_named"`
}

// records returns the omitted-routes records logged since the last call.
func (l *omittedLogs) records(t *testing.T) []omittedRecord {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []omittedRecord
	for line := range strings.SplitSeq(strings.TrimSpace(l.buf.String()), "\n") {
		var rec struct {
			Msg string `json:"msg"`
			omittedRecord
		}
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == omittedLogMsg {
			out = append(out, rec.omittedRecord)
		}
	}
	l.buf.Reset()
	return out
}

func omittedLogServer(t *testing.T) (*Server, *omittedLogs) {
	t.Helper()
	logs := &omittedLogs{}
	s, err := New(Options{
		Translate:  translate.Options{ListenerAddress: "0.0.0.0:10000", ControlPlane: "127.0.0.1:18000"},
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, logs
}

func publishSnapshot(t *testing.T, s *Server, snap *model.Snapshot) {
	t.Helper()
	commit, err := s.Prepare(context.Background(), snap)
	if err != nil {
		t.Fatal(err)
	}
	commit()
}

func postRoute(id, host string, b *xdstest.Backend) *model.Route {
	r := route(id, host, b)
	r.Conditions[0].Method = "POST"
	return r
}

// A published revision that changes which routes the gRPC flavor leaves out is logged once
// at Info with the count and the ids; revisions leaving the same routes out (a heartbeat, a
// write to another route) log nothing.
func TestOmittedRoutesLoggedOncePerChange(t *testing.T) {
	s, logs := omittedLogServer(t)
	a := &xdstest.Backend{Host: "10.0.50.1", Port: 8080}
	b := &xdstest.Backend{Host: "10.0.50.2", Port: 8080}
	plain := route("plain", "log.test", a)
	plainMoved := route("plain", "log.test", b)
	legacy := route("legacy", "legacy.test", a)
	legacy.Targets[0].TLS = true
	steps := []struct {
		snap *model.Snapshot
		want []string // nil: nothing logged
	}{
		{snapshot(1, plain), nil},
		{snapshot(2, postRoute("posts", "posts.test", a), plain), []string{"posts"}},
		{snapshot(3, postRoute("posts", "posts.test", a), plain), nil},
		{snapshot(4, postRoute("posts", "posts.test", a), plainMoved), nil},
		{snapshot(5, legacy, postRoute("posts", "posts.test", a), plainMoved), []string{"legacy", "posts"}},
		{snapshot(6, legacy, route("posts", "posts.test", a), plainMoved), []string{"legacy"}},
		{snapshot(7, route("posts", "posts.test", a), plainMoved), []string{}},
		{snapshot(8, route("posts", "posts.test", a), plain), nil},
	}
	for _, st := range steps {
		publishSnapshot(t, s, st.snap)
		recs := logs.records(t)
		if st.want == nil {
			if len(recs) > 0 {
				t.Fatalf("revision %d: logged %+v", st.snap.Revision, recs)
			}
			continue
		}
		if len(recs) != 1 {
			t.Fatalf("revision %d: want one record, got %+v", st.snap.Revision, recs)
		}
		r := recs[0]
		if r.Level != "INFO" || r.Group != GRPCGroup || r.Revision != st.snap.Revision || r.Count != len(st.want) ||
			!slices.Equal(r.Routes, st.want) || r.RoutesNotNamed != 0 {
			t.Fatalf("revision %d: got %+v, want routes %v", st.snap.Revision, r, st.want)
		}
	}
}

// 2,000 routes left out: the record counts them all and names the first 100 by id.
func TestOmittedRoutesLogIsBounded(t *testing.T) {
	s, logs := omittedLogServer(t)
	var routes []*model.Route
	for i := range 2000 {
		r := postRoute(fmt.Sprintf("r%04d", i), "many.test", &xdstest.Backend{Host: fmt.Sprintf("10.1.%d.%d", i/250, 1+i%250), Port: 8080})
		r.Conditions[0].PathPattern = fmt.Sprintf("/pkg.S%d/*", i)
		routes = append(routes, r)
	}
	publishSnapshot(t, s, snapshot(1, routes...))
	recs := logs.records(t)
	if len(recs) != 1 {
		t.Fatalf("want one record, got %d", len(recs))
	}
	r := recs[0]
	if r.Count != 2000 || len(r.Routes) != maxLoggedOmitted || r.Routes[0] != "r0000" || r.Routes[99] != "r0099" || r.RoutesNotNamed != 1900 {
		t.Fatalf("got count %d, %d ids from %q, %d not named", r.Count, len(r.Routes), r.Routes[0], r.RoutesNotNamed)
	}
}
