package waf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/api-gateway/api-gateway/model"
)

// MaxCheckRequestBytes bounds the CheckRequest message the Check server must accept: the
// largest body a WAF route can have Envoy send whole (model.MaxWAFRequestBodySize) plus
// room for the headers and attributes around it (Envoy's header limit is 60 KiB by
// default, at most 8 MiB with max_request_headers_kb).
const MaxCheckRequestBytes = model.MaxWAFRequestBodySize + 16<<20

// Statuses the gateway's own limits deny with.
const (
	StatusBodyTooLarge    = 413
	StatusHeadersTooLarge = 431
	StatusForbidden       = 403
	// StatusUnsupportedMediaType: a request body in a Content-Encoding the WAF cannot decode.
	StatusUnsupportedMediaType = 415
)

// partialBodyHeader is the header Envoy's ext_authz adds to the CheckRequest when the body
// it sends is cut at max_request_bytes (allow_partial_message).
const partialBodyHeader = "x-envoy-auth-partial-body"

// errNoHTTP is a CheckRequest without HTTP attributes.
var errNoHTTP = errors.New("waf: check request has no HTTP attributes")

// Inspect runs the request of an Envoy CheckRequest through the WAF. The request is fed to
// Coraza in its own order: connection, URI, headers (Host from :authority, other pseudo
// headers skipped), request headers phase, body (raw_body, else body), request body phase,
// logging. Detect mode never denies.
func (w *WAF) Inspect(ctx context.Context, req *authv3.CheckRequest) Verdict {
	return w.inspect(ctx, req, nil)
}

// inspect is Inspect; onMatched, when set, sees the transaction's matched rules.
func (w *WAF) inspect(ctx context.Context, req *authv3.CheckRequest, onMatched func([]types.MatchedRule)) Verdict {
	h := req.GetAttributes().GetRequest().GetHttp()
	if h == nil {
		return w.failure(errNoHTTP)
	}
	if err := ctx.Err(); err != nil {
		// Envoy has given up on this check already (deadline.go).
		return w.unfinished(err)
	}
	hdrs := collectHeaders(h)

	v := Verdict{Allowed: true}
	if w.cfg.MaxHeaderSize > 0 && hdrs.size > w.cfg.MaxHeaderSize {
		w.limitViolation(&v, StatusHeadersTooLarge,
			fmt.Sprintf("request headers are %d bytes, over the %d byte limit", hdrs.size, w.cfg.MaxHeaderSize))
		if !v.Allowed {
			return v
		}
	}
	body, err := w.requestBody(&v, h, hdrs)
	if err != nil {
		return w.failure(err)
	}
	if !v.Allowed {
		return v
	}

	tx := w.newTx(experimental.Options{ID: transactionID(h), Context: ctx})
	defer func() { _ = tx.Close() }()
	if tx.IsRuleEngineOff() {
		return v
	}
	g := guard(ctx, tx)
	defer g.release()

	attrs := req.GetAttributes()
	srcIP, srcPort := socketAddress(attrs.GetSource().GetAddress())
	dstIP, dstPort := socketAddress(attrs.GetDestination().GetAddress())
	tx.ProcessConnection(srcIP, srcPort, dstIP, dstPort)
	tx.ProcessURI(hdrs.path, hdrs.method, hdrs.protocol)
	if hdrs.hasHost {
		tx.AddRequestHeader("Host", hdrs.host)
		tx.SetServerName(serverName(hdrs.host))
	}
	for _, kv := range hdrs.list {
		tx.AddRequestHeader(kv.key, kv.value)
	}

	it := tx.ProcessRequestHeaders()
	if it == nil && g.expired() {
		return w.unfinished(g.err)
	}
	if it == nil && len(body) > 0 && tx.IsRequestBodyAccessible() {
		var err error
		if it, _, err = tx.WriteRequestBody(body); err != nil {
			tx.ProcessLogging()
			return w.failure(fmt.Errorf("waf: writing request body: %w", err))
		}
	}
	if it == nil {
		var err error
		if it, err = tx.ProcessRequestBody(); err != nil {
			tx.ProcessLogging()
			return w.failure(fmt.Errorf("waf: processing request body: %w", err))
		}
	}
	if it == nil && g.stopped {
		// A checkpoint found the deadline passed and removed the remaining rules: what
		// ran is no verdict. (A rule that interrupted before that is one: a deny stands.)
		if onMatched != nil {
			onMatched(tx.MatchedRules())
		}
		return w.unfinished(g.err)
	}
	w.fillVerdict(&v, tx, it)
	tx.ProcessLogging()
	if onMatched != nil {
		onMatched(tx.MatchedRules())
	}
	return v
}

// requestBody is the body to inspect, from the CheckRequest: a body over the limit or cut
// by Envoy is recorded in v (block mode: v is no longer allowed and the caller returns
// it), a body with a Content-Encoding is decoded (encoding.go). err: a declared body the
// CheckRequest does not carry.
func (w *WAF) requestBody(v *Verdict, h *authv3.AttributeContext_HttpRequest, hdrs requestHeaders) ([]byte, error) {
	body := h.GetRawBody()
	if len(body) == 0 && h.GetBody() != "" {
		body = []byte(h.GetBody())
	}
	if n := declaredBodySize(h, hdrs, len(body)); n > w.cfg.MaxRequestBodySize {
		w.limitViolation(v, StatusBodyTooLarge,
			fmt.Sprintf("request body is %d bytes, over the %d byte limit", n, w.cfg.MaxRequestBodySize))
		if !v.Allowed {
			return nil, nil
		}
	}
	switch cl, ok := hdrs.declaredLength(); {
	case hdrs.partialBody:
		// Envoy sent only the first max_request_bytes of the body: judging the prefix would
		// pass an attack placed after it and fail a valid JSON or multipart body that no
		// longer parses. The gateway never serves allow_partial_message (a larger body gets
		// Envoy's own 413), so this is an Envoy configured by someone else, or an older
		// config: refuse like SecRequestBodyLimitAction Reject, never inspect in part (in
		// detect mode: recorded, the headers inspected, the prefix not).
		w.limitViolation(v, StatusBodyTooLarge,
			fmt.Sprintf("request body was cut by Envoy at %d bytes (x-envoy-auth-partial-body); a partial body is never inspected", len(body)))
		return nil, nil
	case ok && cl > int64(len(body)) && v.Status == 0:
		// A body Envoy did not buffer for the check: with with_request_body it sends the
		// whole body and says so (x-envoy-auth-partial-body: false). Without the header and
		// with less than Content-Length, the route's Envoy config does not buffer bodies
		// (an Envoy before 1.29 ignores the per-route with_request_body; a route update
		// not yet applied): passing it would pass a body the WAF has never seen.
		return nil, fmt.Errorf("waf: the request declares a %d byte body, %d bytes were sent for inspection (does Envoy buffer this route's bodies for ext_authz?)", cl, len(body))
	}
	if len(body) > 0 && hdrs.contentEncoding != "" {
		// Inspect what the upstream decodes, not the compressed bytes (encoding.go).
		body = w.decodedBody(v, hdrs.contentEncoding, body)
	}
	return body, nil
}

// limitViolation records a breach of the gateway's own header/body size limits.
func (w *WAF) limitViolation(v *Verdict, status int, msg string) {
	v.Detected = true
	v.Status = status
	v.Category = CategoryLimits
	v.Message = msg
	v.Allowed = w.cfg.Mode == ModeDetect
}

// StatusUnavailable is the status of a check the WAF could not finish in time.
const StatusUnavailable = 503

// unfinished is the verdict for a request whose context ended before the WAF could
// finish (Envoy's ext_authz timeout passed): like failure, it fails closed in block mode,
// with 503 (what Envoy itself answers on the timeout, status_on_error) and the context's
// error. Logged at warn level: under load it is expected, not a fault.
func (w *WAF) unfinished(err error) Verdict {
	err = fmt.Errorf("waf: inspection stopped: %w", err)
	w.logger.Warn("waf inspection stopped at the request's deadline", "error", err, "waf", w.key)
	return Verdict{Allowed: w.cfg.Mode == ModeDetect, Status: StatusUnavailable, Err: err, Message: err.Error()}
}

// failure is the verdict for a request that could not be inspected: block mode fails closed.
func (w *WAF) failure(err error) Verdict {
	w.logger.Error("waf inspection failed", "error", err, "waf", w.key)
	return Verdict{Allowed: w.cfg.Mode == ModeDetect, Detected: false, Status: 500, Err: err, Message: err.Error()}
}

type txVariables interface {
	Variables() plugintypes.TransactionVariables
}

type logFlag interface{ Log() bool }

// fillVerdict reads the transaction's outcome into v.
func (w *WAF) fillVerdict(v *Verdict, tx types.Transaction, it *types.Interruption) {
	matched := tx.MatchedRules()
	var cats []string
	var deciding types.MatchedRule
	for _, mr := range matched {
		if lf, ok := mr.(logFlag); ok && !lf.Log() {
			continue
		}
		id := mr.Rule().ID()
		v.RuleIDs = append(v.RuleIDs, id)
		if isEvaluationRule(id) {
			continue
		}
		if c := w.ruleCategory(id); c != "" {
			cats = append(cats, c)
		}
		if it == nil && deciding == nil && w.cfg.Mode == ModeDetect && wouldDisrupt(mr) {
			deciding = mr
		}
	}
	if tv, ok := tx.(txVariables); ok {
		if s := tv.Variables().TX().Get("blocking_inbound_anomaly_score"); len(s) > 0 {
			v.AnomalyScore, _ = strconv.Atoi(s[0])
		}
	}
	switch {
	case v.Detected:
		// A size limit already decided; the matches above are kept for the record.
	case it != nil:
		v.Detected = true
		v.Allowed = false
		v.Status = it.Status
		v.RuleID = it.RuleID
		if v.Status == 0 {
			v.Status = StatusForbidden
		}
	case w.cfg.Mode == ModeDetect && v.AnomalyScore >= w.cfg.AnomalyThreshold:
		v.Detected = true
		v.Status = StatusForbidden
		v.RuleID = 949110
	case deciding != nil:
		v.Detected = true
		v.Status = StatusForbidden
		v.RuleID = deciding.Rule().ID()
	}
	if !v.Detected && v.Category == "" {
		return
	}
	if v.Category == "" {
		v.Category = pickCategory(cats)
		if v.Category == "" {
			v.Category = categoryByID(v.RuleID)
		}
	}
	if v.Message == "" {
		for _, mr := range matched {
			if mr.Rule().ID() == v.RuleID {
				v.Message = mr.Message()
				break
			}
		}
	}
}

// wouldDisrupt reports a matched rule whose disruptive action is deny, drop or redirect
// (in DetectionOnly mode Coraza records the action it would have taken but does not
// expose it through its interface).
func wouldDisrupt(mr types.MatchedRule) bool {
	rv := reflect.ValueOf(mr)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return false
	}
	f := rv.FieldByName("DisruptiveAction_")
	if !f.IsValid() || !f.CanInt() {
		return false
	}
	// Coraza's DisruptiveAction enum: 0 unknown, 1 allow, 2 deny, 3 drop, 4 pass, 5 redirect.
	switch f.Int() {
	case 2, 3, 5:
		return true
	}
	return false
}

// header is one request header as Coraza sees it.
type header struct{ key, value string }

// requestHeaders is the CheckRequest's header view: pseudo headers split out.
type requestHeaders struct {
	method, path, protocol, host string
	hasHost                      bool // :authority (or host) was sent, possibly empty
	contentLength                string
	contentEncoding              string   // every Content-Encoding header, joined with ","
	list                         []header // sorted by name, pseudo headers and host removed
	size                         int64    // bytes of names and values, host included
	// partialBody: Envoy marked the body as cut at max_request_bytes
	// (x-envoy-auth-partial-body other than "false").
	partialBody bool
}

var txCounter atomic.Uint64

// collectHeaders reads the headers of the request (the headers map, or header_map when
// Envoy sends raw headers) in a deterministic order.
func collectHeaders(h *authv3.AttributeContext_HttpRequest) requestHeaders {
	r := requestHeaders{method: h.GetMethod(), path: h.GetPath(), protocol: h.GetProtocol()}
	add := func(k, v string) {
		if len(k) > 0 && k[0] == ':' {
			switch k {
			case ":authority":
				r.host, r.hasHost = v, true
			case ":method":
				if r.method == "" {
					r.method = v
				}
			case ":path":
				if r.path == "" {
					r.path = v
				}
			}
			return
		}
		if strings.EqualFold(k, "host") {
			if !r.hasHost {
				r.host, r.hasHost = v, true
			}
			return
		}
		if strings.EqualFold(k, "content-length") {
			r.contentLength = v
		}
		if strings.EqualFold(k, "content-encoding") {
			if r.contentEncoding != "" {
				r.contentEncoding += ","
			}
			r.contentEncoding += v
		}
		if strings.EqualFold(k, partialBodyHeader) && v != "false" {
			// Envoy writes "true" or "false" and drops a client's own header of that name
			// (setHttpRequest in source/extensions/filters/common/ext_authz/
			// check_request_utils.cc); anything but "false" is not a whole body.
			r.partialBody = true
		}
		r.size += int64(len(k) + len(v))
		r.list = append(r.list, header{k, v})
	}
	if m := h.GetHeaderMap(); m != nil && len(m.GetHeaders()) > 0 {
		for _, hv := range m.GetHeaders() {
			val := hv.GetValue()
			if len(hv.GetRawValue()) > 0 {
				val = string(hv.GetRawValue())
			}
			add(hv.GetKey(), val)
		}
	} else {
		for k, v := range h.GetHeaders() {
			add(k, v)
		}
		slices.SortFunc(r.list, func(a, b header) int { return strings.Compare(a.key, b.key) })
	}
	if !r.hasHost && h.GetHost() != "" {
		r.host, r.hasHost = h.GetHost(), true
	}
	if r.hasHost {
		r.size += int64(len("host") + len(r.host))
	}
	if r.method == "" {
		r.method = "GET"
	}
	if r.path == "" {
		r.path = "/"
	}
	if r.protocol == "" {
		r.protocol = "HTTP/1.1"
	}
	return r
}

// declaredLength is the request's Content-Length, when it has a valid one.
func (r requestHeaders) declaredLength() (int64, bool) {
	if r.contentLength == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(r.contentLength), 10, 64)
	return n, err == nil && n >= 0
}

// declaredBodySize is the larger of the body received and the declared Content-Length
// (Envoy may send a truncated body when the request is larger than its buffer).
func declaredBodySize(h *authv3.AttributeContext_HttpRequest, hdrs requestHeaders, got int) int64 {
	n := int64(got)
	if h.GetSize() > n {
		n = h.GetSize()
	}
	if cl, ok := hdrs.declaredLength(); ok && cl > n {
		n = cl
	}
	return n
}

// socketAddress returns the address and port of an Envoy address ("", 0 when absent).
func socketAddress(a *corev3.Address) (string, int) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", 0
	}
	return sa.GetAddress(), int(sa.GetPortValue())
}

// serverName strips the port from a Host value.
func serverName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// transactionID is Envoy's request id, or a process-unique counter.
func transactionID(h *authv3.AttributeContext_HttpRequest) string {
	if id := h.GetId(); id != "" {
		return id
	}
	if id := h.GetHeaders()["x-request-id"]; id != "" {
		return id
	}
	return "waf-" + strconv.FormatUint(txCounter.Add(1), 36)
}
