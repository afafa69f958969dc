package analytics

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultUsageRange is the usage range when start is not given.
const DefaultUsageRange = 7 * 24 * time.Hour

// maxSeriesPoints bounds the buckets one usage request may ask for.
const maxSeriesPoints = 10000

// UsageHandler serves GET /api/v1/management/analytics/usage with query parameters
// start, end (RFC3339 or YYYY-MM-DD; a date end includes that whole day; defaults: the last
// 7 days), group_by (day|hour, default day), route, api_key, user, tenant (filters) and
// limit (breakdown size, default 20).
func (s *Service) UsageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowGet(w, r) {
			return
		}
		q := r.URL.Query()
		var bad []FieldProblem
		now := s.now().UTC()
		end, endSet, err := parseTime(q.Get("end"), true)
		if err != nil {
			bad = append(bad, FieldProblem{"end", err.Error()})
		}
		if !endSet {
			end = now
		}
		start, startSet, err := parseTime(q.Get("start"), false)
		if err != nil {
			bad = append(bad, FieldProblem{"start", err.Error()})
		}
		if !startSet {
			start = end.Add(-DefaultUsageRange)
		}
		res := Day
		switch g := q.Get("group_by"); g {
		case "", "day":
		case "hour":
			res = Hour
		default:
			bad = append(bad, FieldProblem{"group_by", fmt.Sprintf("must be day or hour, got %q", g)})
		}
		limit := 20
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > 1000 {
				bad = append(bad, FieldProblem{"limit", "must be an integer from 1 to 1000"})
			}
			limit = n
		}
		if len(bad) == 0 {
			switch {
			case !start.Before(end):
				bad = append(bad, FieldProblem{"start", "must be before end"})
			case end.Sub(start)/res.Duration() > maxSeriesPoints:
				bad = append(bad, FieldProblem{"end", fmt.Sprintf("range holds more than %d %s buckets; use a shorter range or group_by=day", maxSeriesPoints, res)})
			}
		}
		if len(bad) > 0 {
			WriteError(w, http.StatusBadRequest, "invalid_argument", "invalid usage query", bad...)
			return
		}
		f := Filter{Route: q.Get("route"), APIKey: q.Get("api_key"), User: q.Get("user"), Tenant: q.Get("tenant")}
		rep, err := s.Usage(r.Context(), start, end, res, f, limit)
		if err != nil {
			s.log.ErrorContext(r.Context(), "analytics usage query failed", "err", err)
			WriteError(w, http.StatusInternalServerError, "internal", "analytics store query failed")
			return
		}
		writeJSON(w, rep)
	})
}

// ErrorsHandler serves GET /api/v1/management/analytics/errors with query parameters
// timeframe (a duration such as 15m, 24h or 7d; default 24h; at most the day retention)
// and the filters of UsageHandler.
func (s *Service) ErrorsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowGet(w, r) {
			return
		}
		q := r.URL.Query()
		tf := 24 * time.Hour
		if v := q.Get("timeframe"); v != "" {
			d, err := ParseTimeframe(v)
			switch {
			case err != nil:
				WriteError(w, http.StatusBadRequest, "invalid_argument", "invalid errors query", FieldProblem{"timeframe", err.Error()})
				return
			case d > s.retention.Day:
				WriteError(w, http.StatusBadRequest, "invalid_argument", "invalid errors query",
					FieldProblem{"timeframe", fmt.Sprintf("must be at most the analytics retention (%s)", s.retention.Day)})
				return
			}
			tf = d
		}
		f := Filter{Route: q.Get("route"), APIKey: q.Get("api_key"), User: q.Get("user"), Tenant: q.Get("tenant")}
		rep, err := s.Errors(r.Context(), tf, f)
		if err != nil {
			s.log.ErrorContext(r.Context(), "analytics errors query failed", "err", err)
			WriteError(w, http.StatusInternalServerError, "internal", "analytics store query failed")
			return
		}
		writeJSON(w, rep)
	})
}

// ParseTimeframe reads a positive Go duration, or a whole number of days ("7d") or weeks
// ("2w").
func ParseTimeframe(v string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(v, "d"); ok && n != "" && !strings.ContainsAny(n, "hmsuµn") {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("must be a duration such as 15m, 24h or 7d, got %q", v)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else if n, ok := strings.CutSuffix(v, "w"); ok && n != "" {
		weeks, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("must be a duration such as 15m, 24h or 7d, got %q", v)
		}
		d = time.Duration(weeks) * 7 * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return 0, fmt.Errorf("must be a duration such as 15m, 24h or 7d, got %q", v)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive, got %q", v)
	}
	return d, nil
}

// parseTime reads RFC3339 or YYYY-MM-DD (UTC). A date used as an end means the end of that
// day.
func parseTime(v string, isEnd bool) (time.Time, bool, error) {
	if v == "" {
		return time.Time{}, false, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), true, nil
	}
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, true, fmt.Errorf("must be RFC3339 (2024-01-31T15:04:05Z) or YYYY-MM-DD, got %q", v)
	}
	if isEnd {
		t = t.Add(24 * time.Hour)
	}
	return t, true, nil
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
	return false
}

// FieldProblem is one entry of an error's details.
type FieldProblem struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

type errorBody struct {
	Error struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details []FieldProblem `json:"details,omitempty"`
	} `json:"error"`
}

// WriteError writes the project's error JSON.
func WriteError(w http.ResponseWriter, status int, code, msg string, details ...FieldProblem) {
	var b errorBody
	b.Error.Code, b.Error.Message, b.Error.Details = code, msg, details
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
