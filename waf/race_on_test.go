//go:build race

package waf

// raceEnabled: under the race detector (5-10x slower) the CRS suite runs a sample.
const raceEnabled = true
