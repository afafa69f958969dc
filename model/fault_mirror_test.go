package model

import (
	"testing"
	"time"
)

// Every bad fault and mirror field is reported at once, at its own field: percents outside
// 0-100 (and finer than per million), a delay of nothing or of days, abort statuses outside
// Envoy's 200-599, a mirror to the route's own upstream.
func TestFaultAndMirrorBadFieldsReportedTogether(t *testing.T) {
	var r Route
	body := `{"id":"r","conditions":[{"path_pattern":"/"}],"targets":[{"host":"10.0.0.1","port":80},{"service":"users"}],
		"fault":{"delay":{"fixed":"999999h","percent":101},"abort":{"status":99,"percent":-1}},
		"mirror":{"target":{"host":"10.0.0.1","port":80},"percent":1e9}}`
	errs := DecodeStrict([]byte(body), &r)
	errs = append(errs, r.Validate()...)
	f := fieldsOf(errs)
	for _, field := range []string{"fault.delay.fixed", "fault.delay.percent", "fault.abort.status", "fault.abort.percent", "mirror.target", "mirror.percent"} {
		if _, ok := f[field]; !ok {
			t.Errorf("%s not reported: %v", field, f)
		}
	}
	if len(f) != 6 {
		t.Errorf("%d problems, want 6: %v", len(f), f)
	}
}

func TestFaultAndMirrorFieldChecks(t *testing.T) {
	pct := func(v float64) *float64 { return &v }
	code := func(v int) *int { return &v }
	base := func() Route {
		return Route{ID: "r", Conditions: []Condition{{PathPattern: "/"}}, Targets: []Target{{Host: "10.0.0.1", Port: 80}, {Service: "users"}}}
	}
	cases := []struct {
		name  string
		set   func(*Route)
		field string // "" accepted
	}{
		{"delay and abort", func(r *Route) {
			r.Fault = &Fault{Delay: &FaultDelay{Fixed: Duration(2e9), Percent: pct(5)}, Abort: &FaultAbort{Status: 503, Percent: pct(0.0001)}}
		}, ""},
		{"percent 0 and 100", func(r *Route) {
			r.Fault = &Fault{Delay: &FaultDelay{Fixed: MaxFaultDelay, Percent: pct(0)}, Abort: &FaultAbort{Status: 200, Percent: pct(100)}}
		}, ""},
		{"grpc abort", func(r *Route) { r.Fault = &Fault{Abort: &FaultAbort{GRPCStatus: code(14)}} }, ""},
		{"empty fault", func(r *Route) { r.Fault = &Fault{} }, "fault.delay"},
		{"zero delay", func(r *Route) { r.Fault = &Fault{Delay: &FaultDelay{}} }, "fault.delay.fixed"},
		{"1ms delay", func(r *Route) { r.Fault = &Fault{Delay: &FaultDelay{Fixed: Duration(time.Millisecond)}} }, ""},
		{"negative delay", func(r *Route) { r.Fault = &Fault{Delay: &FaultDelay{Fixed: -1}} }, "fault.delay.fixed"},
		{"sub-millisecond delay", func(r *Route) { r.Fault = &Fault{Delay: &FaultDelay{Fixed: Duration(999 * time.Microsecond)}} }, "fault.delay.fixed"},
		{"delay over the bound", func(r *Route) { r.Fault = &Fault{Delay: &FaultDelay{Fixed: MaxFaultDelay + 1}} }, "fault.delay.fixed"},
		// Envoy's stream idle timeout (5 min: the HTTP connection manager's default, which the
		// gateway leaves) ends a request held that long with a 408 instead of forwarding it.
		{"delay reaching Envoy's stream idle timeout", func(r *Route) {
			r.Fault = &Fault{Delay: &FaultDelay{Fixed: Duration(5 * time.Minute)}}
		}, "fault.delay.fixed"},
		{"delay a minute short of the stream idle timeout", func(r *Route) {
			r.Fault = &Fault{Delay: &FaultDelay{Fixed: Duration(4 * time.Minute)}}
		}, ""},
		{"5 decimals", func(r *Route) {
			r.Fault = &Fault{Delay: &FaultDelay{Fixed: Duration(time.Second), Percent: pct(0.00001)}}
		}, "fault.delay.percent"},
		{"abort 600", func(r *Route) { r.Fault = &Fault{Abort: &FaultAbort{Status: 600}} }, "fault.abort.status"},
		{"abort 199", func(r *Route) { r.Fault = &Fault{Abort: &FaultAbort{Status: 199}} }, "fault.abort.status"},
		{"abort without status", func(r *Route) { r.Fault = &Fault{Abort: &FaultAbort{}} }, "fault.abort.status"},
		{"abort both", func(r *Route) { r.Fault = &Fault{Abort: &FaultAbort{Status: 503, GRPCStatus: code(14)}} }, "fault.abort.status"},
		{"grpc status 0", func(r *Route) { r.Fault = &Fault{Abort: &FaultAbort{GRPCStatus: code(0)}} }, "fault.abort.grpc_status"},
		{"grpc status 17", func(r *Route) { r.Fault = &Fault{Abort: &FaultAbort{GRPCStatus: code(17)}} }, "fault.abort.grpc_status"},
		{"mirror host", func(r *Route) {
			r.Mirror = &Mirror{Target: &Target{Host: "shadow.internal", Port: 9090}, Percent: pct(10)}
		}, ""},
		{"mirror service", func(r *Route) { r.Mirror = &Mirror{Service: "billing"} }, ""},
		{"mirror nothing", func(r *Route) { r.Mirror = &Mirror{} }, "mirror.target"},
		{"mirror both", func(r *Route) {
			r.Mirror = &Mirror{Service: "billing", Target: &Target{Host: "10.0.0.9", Port: 80}}
		}, "mirror.service"},
		{"mirror bad target", func(r *Route) { r.Mirror = &Mirror{Target: &Target{Host: "a b", Port: 0}} }, "mirror.target.host"},
		{"mirror target weight", func(r *Route) { w := 3; r.Mirror = &Mirror{Target: &Target{Host: "10.0.0.9", Port: 80, Weight: &w}} }, "mirror.target"},
		{"mirror to own target", func(r *Route) { r.Mirror = &Mirror{Target: &Target{Host: "10.0.0.1", Port: 80}} }, "mirror.target"},
		{"mirror to own service", func(r *Route) { r.Mirror = &Mirror{Service: "users"} }, "mirror.target"},
		{"mirror target to own service", func(r *Route) { r.Mirror = &Mirror{Target: &Target{Service: "users"}} }, "mirror.target"},
		// A mirror copies the route's requests, credentials included: it is no weaker than them.
		{"plaintext mirror target of a TLS route", func(r *Route) {
			r.Targets[0].TLS = true
			r.Mirror = &Mirror{Target: &Target{Host: "shadow.internal", Port: 9090}}
		}, "mirror.target.tls"},
		{"mirror service of a TLS route", func(r *Route) {
			r.Targets[1].TLS = true
			r.Mirror = &Mirror{Service: "billing"}
		}, "mirror.service"},
		{"TLS mirror target of a TLS route", func(r *Route) {
			r.Targets[0].TLS = true
			r.Mirror = &Mirror{Target: &Target{Service: "billing", TLS: true}}
		}, ""},
		{"mirror bad service", func(r *Route) { r.Mirror = &Mirror{Service: "a/b"} }, "mirror.service"},
		{"mirror percent 101", func(r *Route) { r.Mirror = &Mirror{Service: "billing", Percent: pct(101)} }, "mirror.percent"},
		{"mirror percent -1", func(r *Route) { r.Mirror = &Mirror{Service: "billing", Percent: pct(-1)} }, "mirror.percent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := base()
			c.set(&r)
			f := fieldsOf(r.Validate())
			if c.field == "" {
				if len(f) > 0 {
					t.Fatalf("refused: %v", f)
				}
				return
			}
			if _, ok := f[c.field]; !ok {
				t.Fatalf("%s not reported: %v", c.field, f)
			}
		})
	}
}
