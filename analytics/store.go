package analytics

import (
	"context"
	"fmt"
	"time"
)

// Resolution is the width of an aggregate bucket.
type Resolution int

// The three resolutions, finest first. Every flushed minute is added to all three (the
// roll-up is done on write), and each resolution expires on its own Retention.
const (
	Minute Resolution = iota
	Hour
	Day
)

// Resolutions lists all resolutions, finest first.
var Resolutions = []Resolution{Minute, Hour, Day}

// Duration is the bucket width.
func (r Resolution) Duration() time.Duration {
	switch r {
	case Hour:
		return time.Hour
	case Day:
		return 24 * time.Hour
	}
	return time.Minute
}

// String is "minute", "hour" or "day"; the stores use its first letter in keys.
func (r Resolution) String() string {
	switch r {
	case Hour:
		return "hour"
	case Day:
		return "day"
	}
	return "minute"
}

func (r Resolution) short() string { return r.String()[:1] }

// Truncate returns the start (UTC) of the bucket that holds t.
func (r Resolution) Truncate(t time.Time) time.Time {
	return t.UTC().Truncate(r.Duration())
}

// Row is one aggregate: the counters of one key in one bucket.
type Row struct {
	Res   Resolution
	Start time.Time // bucket start, UTC, aligned to Res
	Key   Key
	Stats Stats
}

// Store keeps aggregate rows durably. Implementations must be safe for concurrent use and
// must add, never overwrite: two writers merging the same row both count.
type Store interface {
	// Merge adds the counters of every row into the stored row with the same resolution,
	// start and key, atomically for the whole call.
	Merge(ctx context.Context, rows []Row) error
	// Scan calls fn for every stored row of resolution res whose start is in [from, to).
	Scan(ctx context.Context, res Resolution, from, to time.Time, fn func(Row) error) error
	// Expire deletes the rows of resolution res whose start is before before.
	Expire(ctx context.Context, res Resolution, before time.Time) error
}

// Retention is how long rows of each resolution are kept.
type Retention struct {
	Minute time.Duration `json:"minute"`
	Hour   time.Duration `json:"hour"`
	Day    time.Duration `json:"day"`
}

// DefaultRetention keeps minutes for 2 days, hours for 31 days and days for 400 days.
func DefaultRetention() Retention {
	return Retention{Minute: 48 * time.Hour, Hour: 31 * 24 * time.Hour, Day: 400 * 24 * time.Hour}
}

// RetentionFor derives a Retention from one overall setting: days are kept for total,
// hours and minutes for at most the defaults.
func RetentionFor(total time.Duration) Retention {
	d := DefaultRetention()
	r := Retention{Minute: min(total, d.Minute), Hour: min(total, d.Hour), Day: total}
	return r
}

// For returns the retention of res.
func (r Retention) For(res Resolution) time.Duration {
	switch res {
	case Hour:
		return r.Hour
	case Day:
		return r.Day
	}
	return r.Minute
}

// Validate checks every retention is at least one bucket and that coarser resolutions are
// kept at least as long as finer ones.
func (r Retention) Validate() error {
	for _, res := range Resolutions {
		if r.For(res) < res.Duration() {
			return fmt.Errorf("analytics: %s retention %s is shorter than one %s", res, r.For(res), res)
		}
	}
	if r.Hour < r.Minute || r.Day < r.Hour {
		return fmt.Errorf("analytics: retention must not shrink with coarser resolution (minute %s, hour %s, day %s)", r.Minute, r.Hour, r.Day)
	}
	return nil
}

// rollUp expands minute rows into minute, hour and day rows, summing rows that fall into the
// same coarser bucket.
func rollUp(minutes map[bucketKey]*Stats) []Row {
	rows := make([]Row, 0, len(minutes)*3)
	coarse := make(map[bucketKey]int, len(minutes)*2)
	for bk, st := range minutes {
		start := time.Unix(bk.start, 0).UTC()
		rows = append(rows, Row{Res: Minute, Start: start, Key: bk.key, Stats: *st})
		for _, res := range []Resolution{Hour, Day} {
			s := res.Truncate(start)
			ck := bucketKey{res: res, start: s.Unix(), key: bk.key}
			if i, ok := coarse[ck]; ok {
				rows[i].Stats.Merge(st)
				continue
			}
			coarse[ck] = len(rows)
			var c Stats
			c.Merge(st)
			rows = append(rows, Row{Res: res, Start: s, Key: bk.key, Stats: c})
		}
	}
	return rows
}

// bucketKey identifies a row in memory.
type bucketKey struct {
	res   Resolution
	start int64 // unix seconds
	key   Key
}
