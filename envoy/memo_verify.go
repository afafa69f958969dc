//go:build race

package envoy

// verifyReuse: race-enabled builds (the tests run with -race) check every reuse of an IR
// object by pointer against its content hash (Memo.verify).
const verifyReuse = true
