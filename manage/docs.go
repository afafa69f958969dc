package manage

import (
	_ "embed"
	"net/http"
)

//go:embed docs.html
var docsPage []byte

// docs serves a self-contained page (no CDN) that fetches openapi.json with the admin token
// the reader types in and renders every operation with its schemas.
func (a *API) docs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	_, _ = w.Write(docsPage)
}
