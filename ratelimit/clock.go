package ratelimit

import "time"

// Clock tells the time. Algorithms never call time.Now: the service reads its Clock once per
// request and passes the instant down (to the Redis scripts as an argument), so tests replay
// exact request times.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock returns the wall clock.
func SystemClock() Clock { return systemClock{} }
