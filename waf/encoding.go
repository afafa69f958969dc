package waf

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Request body content codings. Envoy's ext_authz sends the body as the client sent it
// (the gateway runs no decompressor filter), so a body with Content-Encoding gzip reaches
// the WAF compressed: the CRS would look at deflate bytes and an attack in it would pass
// to an upstream that decodes request bodies. CRS refuses Content-Encoding by default
// (920450, restricted_headers_basic), but only with an anomaly score of 5: at a higher
// anomaly_threshold, or with 920450 excluded to accept compressed uploads, the body would
// go uninspected. So the WAF inspects the decoded body: gzip (x-gzip) and deflate (zlib,
// or raw deflate as some clients send it), in any number of layers, decoded up to
// max_request_body_size (a larger decoded body is refused with 413: a decompression bomb
// costs at most that much). A coding it cannot decode (br, zstd, compress, a corrupt
// stream) is refused with 415: a body the WAF cannot read is never passed uninspected.

// errBodyTooLarge is a body that decodes to more than the limit.
var errBodyTooLarge = errors.New("decoded request body is over the limit")

// decodeBody undoes the codings of a Content-Encoding value (applied in the order listed,
// so undone from the last) on body, producing at most limit bytes.
func decodeBody(encoding string, body []byte, limit int64) ([]byte, error) {
	codings := strings.Split(encoding, ",")
	for i := len(codings) - 1; i >= 0; i-- {
		c := strings.ToLower(strings.TrimSpace(codings[i]))
		var r io.Reader
		switch c {
		case "", "identity":
			continue
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c, err)
			}
			zr.Multistream(true)
			r = zr
		case "deflate":
			r = deflateReader(body)
		default:
			return nil, fmt.Errorf("content coding %q is not supported", c)
		}
		out, err := io.ReadAll(io.LimitReader(r, limit+1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c, err)
		}
		if int64(len(out)) > limit {
			return nil, errBodyTooLarge
		}
		body = out
	}
	return body, nil
}

// deflateReader reads "deflate" as RFC 9110 defines it (zlib), or the raw deflate stream
// some clients send under that name.
func deflateReader(body []byte) io.Reader {
	if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
		return zr
	}
	return flate.NewReader(bufio.NewReader(bytes.NewReader(body)))
}

// decodedBody is inspect's view of a request body with a Content-Encoding: the decoded
// body, or a limit violation recorded in v (block mode: the caller returns v).
func (w *WAF) decodedBody(v *Verdict, encoding string, body []byte) []byte {
	dec, err := decodeBody(encoding, body, w.cfg.MaxRequestBodySize)
	switch {
	case err == nil:
		return dec
	case errors.Is(err, errBodyTooLarge):
		w.limitViolation(v, StatusBodyTooLarge, fmt.Sprintf(
			"request body (Content-Encoding %q) decodes to more than the %d byte limit", encoding, w.cfg.MaxRequestBodySize))
	default:
		w.limitViolation(v, StatusUnsupportedMediaType, fmt.Sprintf(
			"request body (Content-Encoding %q) cannot be decoded for inspection: %v", encoding, err))
	}
	return body
}
