package waf

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corazawaf/coraza/v3/types"

	"github.com/api-gateway/api-gateway/model"
)

// countdownCtx is a context that ends after its Err method has been asked n times: a
// deadline that passes at a chosen point of the inspection, the same on every run.
type countdownCtx struct {
	context.Context
	left  atomic.Int64
	calls atomic.Int64
	done  chan struct{}
}

func newCountdownCtx(n int64) *countdownCtx {
	c := &countdownCtx{Context: context.Background(), done: make(chan struct{})}
	c.left.Store(n)
	return c
}

func (c *countdownCtx) Done() <-chan struct{} { return c.done }

func (c *countdownCtx) Err() error {
	c.calls.Add(1)
	if c.left.Add(-1) < 0 {
		return context.DeadlineExceeded
	}
	return nil
}

// sqliForm is a urlencoded form of about size bytes whose last field is an SQL injection.
func sqliForm(size int) req {
	v := url.Values{}
	for i := 0; len(v.Encode()) < size; i++ {
		v.Add(fmt.Sprintf("field_%04d", i), fmt.Sprintf("ordinary text number %d", i))
	}
	body := v.Encode() + "&q=" + url.QueryEscape("1' UNION SELECT password FROM users--")
	return req{method: "POST", uri: "/forms/submit", body: body, h: [][2]string{{"Content-Type", "application/x-www-form-urlencoded"}}}
}

func has942(ids []int) bool {
	for _, id := range ids {
		if id/1000 == 942 {
			return true
		}
	}
	return false
}

// TestInspectDeadlinePassedBeforeStart: a check whose context has ended is not started:
// 503 with the context's error, never an allow (block mode).
func TestInspectDeadlinePassedBeforeStart(t *testing.T) {
	w := mustGet(t, NewRegistry(RegistryOptions{Logger: quiet}), &model.WAFSettings{})
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	v := w.Inspect(ctx, sqliForm(100).check())
	if v.Allowed || v.Status != StatusUnavailable || !errors.Is(v.Err, context.DeadlineExceeded) || len(v.RuleIDs) > 0 {
		t.Fatalf("want an unfinished 503 verdict with no rule evaluated, got %+v", v)
	}
}

// TestInspectStopsInsideBodyPhase: the deadline passes at each point of the inspection in
// turn (the n-th time the context is asked). Every run either finishes with the verdict it
// has without a deadline, or stops with 503 and the context's error; once stopped, nothing
// asks the context again and no rule runs (the rules matched so far are all there is:
// runs stopped at the checkpoint before REQUEST-942 matched no SQLi rule, runs stopped
// after it did).
func TestInspectStopsInsideBodyPhase(t *testing.T) {
	w := mustGet(t, NewRegistry(RegistryOptions{Logger: quiet}), &model.WAFSettings{})
	r := sqliForm(2 << 10)
	full := w.Inspect(context.Background(), r.check())
	if full.Allowed || !has942(full.RuleIDs) {
		t.Fatalf("without a deadline the form must be blocked by an SQLi rule: %+v", full)
	}
	var stoppedWithout942, stoppedWith942 int
	for n := int64(0); n < 20; n++ {
		ctx := newCountdownCtx(n)
		var matched []int
		v := w.inspect(ctx, r.check(), func(mrs []types.MatchedRule) {
			for _, mr := range mrs {
				matched = append(matched, mr.Rule().ID())
			}
		})
		switch {
		case v.Err == nil:
			if v.Allowed || v.Status != full.Status || v.RuleID != full.RuleID {
				t.Errorf("n=%d: finished with %+v, want the full verdict %+v", n, v, full)
			}
		default:
			if v.Allowed || v.Status != StatusUnavailable || !errors.Is(v.Err, context.DeadlineExceeded) {
				t.Errorf("n=%d: stopped with %+v, want 503 and the deadline error", n, v)
			}
			if got := ctx.calls.Load(); got != n+1 {
				t.Errorf("n=%d: the context was asked %d times, want %d (nothing asks again once stopped)", n, got, n+1)
			}
			if matched == nil {
				continue // stopped between phases
			}
			if has942(matched) {
				stoppedWith942++
			} else {
				stoppedWithout942++
			}
		}
	}
	if stoppedWithout942 == 0 || stoppedWith942 == 0 {
		t.Fatalf("want runs stopped inside the body phase before and after the SQLi rules, got %d before, %d after",
			stoppedWithout942, stoppedWith942)
	}
}

// TestInspectDeadlineCheckpointsPlaced: the compiled ruleset has a checkpoint before each
// CRS attack file, and none when a custom rule's skip could reach into the CRS.
func TestInspectDeadlineCheckpointsPlaced(t *testing.T) {
	crs, err := crsRequestRules(1)
	if err != nil {
		t.Fatal(err)
	}
	with := withCheckpoints(crs)
	for i, n := range checkpointBefore {
		rule := fmt.Sprintf("\"@%s\" \"id:%d,", deadlineOperatorName, checkpointRuleID+i)
		j := strings.Index(with, rule)
		k := strings.Index(with, "# --- REQUEST-"+n+"-")
		if j < 0 || k < 0 || j > k || strings.Contains(with[j:k], "SecRule") && strings.Count(with[j:k], "SecRule") != 1 {
			t.Errorf("checkpoint %d is not right before REQUEST-%s", checkpointRuleID+i, n)
		}
	}
	for _, c := range []struct {
		custom, after string
		want          bool
	}{
		{"", "", true},
		{`SecRule ARGS:x "@eq 1" "id:10001,phase:2,pass,nolog"`, "", true},
		{`SecRule ARGS:x "@eq 1" "id:10001,phase:2,pass,nolog,skip:3"`, "", false},
		// A skip given to a CRS rule after the fact counts the rules that follow it, a
		// checkpoint among them.
		{"", `SecRuleUpdateActionById 941380 "skip:1"`, false},
	} {
		cfg := ConfigFromSettings(&model.WAFSettings{CustomRules: c.custom, CustomRulesAfterCRS: c.after})
		for _, s := range cfg.sections() {
			if s.crs && s.checkpoints != c.want {
				t.Errorf("custom rules %q, after CRS %q: checkpoints=%v, want %v", c.custom, c.after, s.checkpoints, c.want)
			}
		}
	}
}

// TestInspectPartialBodyRefused: a CheckRequest whose body Envoy marked as cut is refused
// with 413 in block mode and never inspected in part (the SQL injection in the prefix is
// not what decides); detect mode records it and lets it through.
func TestInspectPartialBodyRefused(t *testing.T) {
	reg := NewRegistry(RegistryOptions{Logger: quiet})
	r := sqliForm(1 << 10)
	for _, c := range []struct {
		name, value string
		partial     bool
	}{
		{"true", "true", true},
		{"upper case", "TRUE", true},
		{"garbage", "yes please", true},
		{"empty", "", true},
		{"false", "false", false},
	} {
		cr := r.check()
		cr.Attributes.Request.Http.Headers[partialBodyHeader] = c.value
		v := mustGet(t, reg, &model.WAFSettings{}).Inspect(context.Background(), cr)
		if c.partial {
			if v.Allowed || v.Status != StatusBodyTooLarge || v.Category != CategoryLimits || len(v.RuleIDs) > 0 {
				t.Errorf("%s: want 413 without inspection, got %+v", c.name, v)
			}
		} else if v.Allowed || v.Status != StatusForbidden || !has942(v.RuleIDs) {
			t.Errorf("%s: a whole body is inspected: want the SQLi blocked, got %+v", c.name, v)
		}
	}
	cr := r.check()
	cr.Attributes.Request.Http.Headers[partialBodyHeader] = "true"
	v := mustGet(t, reg, &model.WAFSettings{Mode: model.WAFModeDetect}).Inspect(context.Background(), cr)
	if !v.Allowed || !v.Detected || v.Status != StatusBodyTooLarge || has942(v.RuleIDs) {
		t.Errorf("detect mode: want allowed, recorded as 413 and the prefix not inspected, got %+v", v)
	}
}
