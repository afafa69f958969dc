package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// Prober is the control plane's own active health check, for deployments where no Envoy
// checks the upstreams (proxyless gRPC clients, say). It GETs each instance's health URL at
// the instance's interval; after UnhealthyThreshold failures in a row it writes the instance
// as unhealthy, after HealthyThreshold successes in a row as healthy again. A status in
// 200-399 is a success. Instances that are expired are left to the sweeper and heartbeats.
// Writes are conditional on the revision read; a conflict is retried on the next result.
type Prober struct {
	Store  store.Store
	Log    *slog.Logger
	Client *http.Client // default: no redirects followed
	Now    func() time.Time
	// Defaults for instances whose health_check leaves them out.
	DefaultInterval time.Duration // 10s
	DefaultTimeout  time.Duration // 2s
	// Consecutive results needed to flip (defaults 2 and 1).
	UnhealthyThreshold int
	HealthyThreshold   int
	// Concurrency bounds the probes in flight (default 32).
	Concurrency int
	m           *metrics

	mu    sync.Mutex
	state map[string]*probeState
}

type probeState struct {
	next      time.Time
	fails     int
	successes int
}

func (p *Prober) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Prober) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.Default()
}

func (p *Prober) client() *http.Client {
	if p.Client != nil {
		return p.Client
	}
	return defaultProbeClient
}

var defaultProbeClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	},
}

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func (p *Prober) intervalOf(sv *model.Service) (interval, timeout time.Duration) {
	interval, timeout = orDefault(p.DefaultInterval, 10*time.Second), orDefault(p.DefaultTimeout, 2*time.Second)
	if hc := sv.HealthCk; hc != nil {
		interval, timeout = orDefault(hc.Interval.D(), interval), orDefault(hc.Timeout.D(), timeout)
	}
	return interval, min(timeout, interval)
}

// ProbeResult counts what one round did.
type ProbeResult struct {
	Probed      int
	Failed      int
	MarkedDown  int
	MarkedUp    int
	Conflicts   int
	WriteErrors int
}

// Round probes every instance that is due, waits for the probes, and writes the status
// changes they call for.
func (p *Prober) Round(ctx context.Context) (ProbeResult, error) {
	var res ProbeResult
	svcs, _, err := listServices(ctx, p.Store, p.log())
	if err != nil {
		return res, err
	}
	now := p.now()
	p.mu.Lock()
	if p.state == nil {
		p.state = map[string]*probeState{}
	}
	present := make(map[string]bool, len(svcs))
	type job struct {
		sv      *model.Service
		st      *probeState
		timeout time.Duration
		err     error
	}
	var jobs []*job
	for _, sv := range svcs {
		url := sv.HealthURL()
		if url == "" || sv.Status == model.StatusExpired || sv.Expired(now) {
			continue
		}
		present[sv.ID] = true
		st := p.state[sv.ID]
		if st == nil {
			st = &probeState{}
			p.state[sv.ID] = st
		}
		if now.Before(st.next) {
			continue
		}
		interval, timeout := p.intervalOf(sv)
		st.next = now.Add(interval)
		jobs = append(jobs, &job{sv: sv, st: st, timeout: timeout})
	}
	for id := range p.state {
		if !present[id] {
			delete(p.state, id)
		}
	}
	p.mu.Unlock()

	sem := make(chan struct{}, orDefault(p.Concurrency, 32))
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			j.err = p.check(ctx, j.sv.HealthURL(), j.timeout)
		}()
	}
	wg.Wait()

	var errs []error
	for _, j := range jobs {
		res.Probed++
		if p.m != nil {
			result := "success"
			if j.err != nil {
				result = "failure"
			}
			p.m.probes.WithLabelValues(result).Inc()
		}
		want := p.tally(j.st, j.err)
		if j.err != nil {
			res.Failed++
		}
		cur := j.sv.Status
		if cur == "" {
			cur = model.StatusHealthy
		}
		if want == "" || want == cur {
			continue
		}
		rev := j.sv.Revision
		j.sv.Status = want
		j.sv.UpdatedAt = p.now().UTC()
		_, err := putService(ctx, p.Store, j.sv, rev)
		switch {
		case err == nil:
			if want == model.StatusUnhealthy {
				res.MarkedDown++
				p.log().Warn("service instance failed its health check; out of the load balancing", "id", j.sv.ID,
					"name", j.sv.Name, "health", j.sv.HealthURL(), "error", j.err.Error())
			} else {
				res.MarkedUp++
				p.log().Info("service instance passes its health check again", "id", j.sv.ID, "name", j.sv.Name)
			}
		case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
			res.Conflicts++
			// Probe again at the next round: the instance changed under us.
			p.mu.Lock()
			j.st.next = time.Time{}
			p.mu.Unlock()
		default:
			res.WriteErrors++
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

// tally updates the counters and returns the status they call for ("" = no opinion yet).
func (p *Prober) tally(st *probeState, err error) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		st.fails++
		st.successes = 0
		if st.fails >= orDefault(p.UnhealthyThreshold, 2) {
			return model.StatusUnhealthy
		}
		return ""
	}
	st.successes++
	st.fails = 0
	if st.successes >= orDefault(p.HealthyThreshold, 1) {
		return model.StatusHealthy
	}
	return ""
}

// check GETs the health URL once.
func (p *Prober) check(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "api-gateway-health-prober")
	resp, err := p.client().Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("health check answered %d", resp.StatusCode)
	}
	return nil
}
