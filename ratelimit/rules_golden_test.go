package ratelimit

import (
	"flag"
	"path/filepath"
	"sort"
	"testing"

	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

var update = flag.Bool("update", false, "rewrite testdata/rules from the current build")

// TestGoldenRules compiles the rate-limit part of the IR of every shared golden model
// (envoy/testdata/in) and compares a dump of the rules with testdata/rules
// (go test ./ratelimit -run TestGoldenRules -update rewrites them).
func TestGoldenRules(t *testing.T) {
	golden.Each(t, func(t *testing.T, name string, _ *model.Snapshot, cfg *ir.Config) {
		rules, err := BuildRulesFromIR(cfg)
		doc := map[string]any{"domains": dumpDomains(rules)}
		if err != nil {
			doc["left_out"] = err.Error()
		}
		golden.Compare(t, filepath.Join("testdata", "rules", name+".yaml"), doc, *update, "go test ./ratelimit -run TestGoldenRules -update")
	})
}

type nodeDump struct {
	Key, Value string
	Limit      *limitDump
	Share      bool
	Children   []nodeDump
}

type limitDump struct {
	Name, Label, Source                                string
	Replaces                                           []string
	Unlimited, Shadow, QuotaMode, Detailed, FailClosed bool
	Rules                                              []ruleDump
}

type ruleDump struct {
	Kind, Algorithm, Calendar, KeySuffix string
	Requests, Burst                      uint64
	PeriodMicros, WindowSeconds          int64
}

func dumpDomains(r *Rules) map[string][]nodeDump {
	out := map[string][]nodeDump{}
	for name, root := range r.domains {
		out[name] = dumpChildren(root)
	}
	return out
}

// dumpChildren lists a node's exact children (sorted by key and value), then its wildcards
// in match order.
func dumpChildren(n *rnode) []nodeDump {
	var out []nodeDump
	for k, c := range n.children {
		out = append(out, dumpNode(k.key, k.value, c))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Value < out[j].Value
	})
	for _, w := range n.wildcards {
		out = append(out, dumpNode(w.key, w.prefix+"*", w.node))
	}
	return out
}

func dumpNode(key, value string, n *rnode) nodeDump {
	d := nodeDump{Key: key, Value: value, Share: n.share, Children: dumpChildren(n)}
	if l := n.lim; l != nil {
		ld := &limitDump{Name: l.name, Label: l.label, Source: l.source, Replaces: l.replaces, Unlimited: l.unlimited,
			Shadow: l.shadow, QuotaMode: l.quotaMode, Detailed: l.detailed, FailClosed: l.failClosed}
		for _, r := range l.rules {
			ld.Rules = append(ld.Rules, ruleDump{Kind: r.kind, Algorithm: string(rune(r.alg)), Calendar: string(r.calendar),
				KeySuffix: r.suffix, Requests: r.requests, Burst: r.burst, PeriodMicros: r.period, WindowSeconds: r.window})
		}
		d.Limit = ld
	}
	return d
}
