package faults

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// SIGKILL the embedded-store binary while 16 clients make 1,000 writes: every write the API
// acknowledged is there after the restart, and the bbolt file passes its consistency check.
func TestSIGKILLDuringWrites(t *testing.T) {
	const total, writers, killAfter = 1000, 16, 400
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"LOG_LEVEL=warn"}})
	start := time.Now()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: writers}}

	var next atomic.Int64
	var acked sync.Map // id -> true
	var nAcked atomic.Int64
	killed := make(chan struct{})
	var killOnce sync.Once
	write := func(id string) (int, error) {
		req, _ := http.NewRequest("POST", g.URL("/api/v1/management/tenants"), strings.NewReader(`{"id":"`+id+`","name":"tenant `+id+`"}`))
		req.Header.Set("Authorization", "Bearer "+g.Token)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	var wg sync.WaitGroup
	var serverErrors atomic.Int64
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > total {
					return
				}
				id := fmt.Sprintf("t-%04d", n)
				code, err := write(id)
				if err != nil {
					select {
					case <-killed:
						return // the process is gone: this write's outcome is unknown
					default:
						t.Errorf("write %s before the kill: %v", id, err)
						return
					}
				}
				switch {
				case code == http.StatusCreated:
					acked.Store(id, true)
					if nAcked.Add(1) == killAfter {
						killOnce.Do(func() { close(killed); g.Kill() })
					}
				case code >= 500:
					serverErrors.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	killOnce.Do(func() { close(killed); g.Kill() }) // in case fewer than killAfter were acked
	if serverErrors.Load() > 0 {
		t.Errorf("%d writes answered 5xx before the kill", serverErrors.Load())
	}
	ackedIDs := map[string]bool{}
	acked.Range(func(k, _ any) bool { ackedIDs[k.(string)] = true; return true })
	if len(ackedIDs) < killAfter {
		t.Fatalf("only %d writes acknowledged before the kill", len(ackedIDs))
	}

	// The file is consistent as the crash left it, before anything reopens it.
	db, err := bolt.Open(filepath.Join(g.DataDir, "gateway.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("the store file does not open after SIGKILL: %v", err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			t.Errorf("bbolt consistency check: %v", cerr)
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("killed after %s", time.Since(start).Round(time.Millisecond))
	g.Start()
	present := listIDs(t, g, "tenants")
	var missing []string
	for id := range ackedIDs {
		if !present[id] {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged writes lost after SIGKILL: %v", len(missing), missing)
	}
	// Finish the 1,000: the writes cut off by the kill go through now (201), or were in fact
	// stored before it (409).
	todo := make(chan string, total)
	for n := 1; n <= total; n++ {
		if id := fmt.Sprintf("t-%04d", n); !ackedIDs[id] {
			todo <- id
		}
	}
	close(todo)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range todo {
				code, err := write(id)
				if err != nil || (code != http.StatusCreated && code != http.StatusConflict) {
					t.Errorf("write %s after restart: %d %v", id, code, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := len(listIDs(t, g, "tenants")); got != total {
		t.Fatalf("%d tenants after completing the writes, want %d", got, total)
	}
	t.Logf("%d of %d writes acknowledged before SIGKILL; all present after restart (%s)", len(ackedIDs), total,
		time.Since(start).Round(time.Millisecond))
}

// listIDs returns the ids of a collection.
func listIDs(t *testing.T, g *testutil.Gateway, kind string) map[string]bool {
	t.Helper()
	var list struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	mustDo(t, g, "GET", "/api/v1/management/"+kind, nil, &list, http.StatusOK)
	out := map[string]bool{}
	for _, it := range list.Items {
		out[it.ID] = true
	}
	return out
}
