//go:build !race

package envoy

// verifyReuse is off outside race-enabled builds: a reused IR object is not re-hashed
// (Memo.verify).
const verifyReuse = false
