package waf

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// rawRequest is an HTTP/1 request as a client put it on the wire.
type rawRequest struct {
	method, uri, version string
	headers              [][2]string // in order, names as sent
	body                 []byte
	srcIP                string
	srcPort              int
	dstIP                string
	dstPort              int
}

// checkRequest builds the CheckRequest Envoy's ext_authz filter sends for r (HTTP/1
// listener, with_request_body + pack_as_bytes): header names lowercased, repeated headers
// joined with ",", Host moved to :authority, pseudo headers :method, :path, :scheme added,
// x-forwarded-proto and x-request-id set by the connection manager, the (de-chunked) body
// in raw_body.
func checkRequest(r rawRequest, requestID string) *authv3.CheckRequest {
	r = frameBody(r)
	hdrs := map[string]string{}
	for _, kv := range r.headers {
		k := strings.ToLower(kv[0])
		if k == "host" {
			k = ":authority"
		}
		if prev, ok := hdrs[k]; ok {
			hdrs[k] = prev + "," + kv[1]
		} else {
			hdrs[k] = kv[1]
		}
	}
	hdrs[":method"] = r.method
	hdrs[":path"] = r.uri
	hdrs[":scheme"] = "http"
	if _, ok := hdrs["x-forwarded-proto"]; !ok {
		hdrs["x-forwarded-proto"] = "http"
	}
	if _, ok := hdrs["x-request-id"]; !ok {
		hdrs["x-request-id"] = requestID
	}
	path, query, fragment := r.uri, "", ""
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path, fragment = path[:i], path[i+1:]
		hdrs[":path"] = path
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		query = path[i+1:]
	}
	_ = query
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddr(r.srcIP, r.srcPort)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddr(r.dstIP, r.dstPort)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       requestID,
			Method:   r.method,
			Headers:  hdrs,
			Path:     path,
			Host:     hdrs[":authority"],
			Scheme:   "http",
			Fragment: fragment,
			Size:     int64(len(r.body)),
			Protocol: r.version,
			RawBody:  r.body,
		}},
	}}
}

func socketAddr(ip string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// parseRawRequest reads an encoded_request: request line, headers, then a body framed by
// Content-Length or chunked transfer encoding (de-chunked, as Envoy hands it to ext_authz).
func parseRawRequest(raw []byte) (rawRequest, error) {
	var r rawRequest
	br := bufio.NewReader(bytes.NewReader(raw))
	line, err := br.ReadString('\n')
	if err != nil {
		return r, fmt.Errorf("request line: %w", err)
	}
	parts := strings.SplitN(strings.TrimRight(line, "\r\n"), " ", 3)
	if len(parts) != 3 {
		return r, fmt.Errorf("bad request line %q", line)
	}
	r.method, r.uri, r.version = parts[0], parts[1], parts[2]
	chunked := false
	for {
		l, err := br.ReadString('\n')
		if err != nil && l == "" {
			break
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		v = strings.TrimSpace(v)
		r.headers = append(r.headers, [2]string{k, v})
		if strings.EqualFold(k, "transfer-encoding") && strings.EqualFold(v, "chunked") {
			chunked = true
		}
	}
	_ = chunked
	r.body, _ = readAll(br)
	return r, nil
}

// frameBody applies HTTP/1 message framing the way Envoy's codec does before ext_authz
// sees the request: a chunked body is de-chunked and a Content-Length beside
// Transfer-Encoding is dropped (allow_chunked_length); otherwise the body is what
// Content-Length announces, and without either header there is no body.
func frameBody(r rawRequest) rawRequest {
	chunked, cl := false, -1
	for _, kv := range r.headers {
		switch strings.ToLower(kv[0]) {
		case "transfer-encoding":
			chunked = strings.Contains(strings.ToLower(kv[1]), "chunked")
		case "content-length":
			if n, err := strconv.Atoi(strings.TrimSpace(kv[1])); err == nil {
				cl = n
			}
		}
	}
	switch {
	case chunked:
		r.body = dechunk(r.body)
		var kept [][2]string
		for _, kv := range r.headers {
			if !strings.EqualFold(kv[0], "content-length") {
				kept = append(kept, kv)
			}
		}
		r.headers = kept
	case cl >= 0:
		if cl < len(r.body) {
			r.body = r.body[:cl]
		}
	default:
		r.body = nil
	}
	return r
}

func readAll(br *bufio.Reader) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(br)
	return b.Bytes(), err
}

func dechunk(b []byte) []byte {
	var out []byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			break
		}
		size, err := strconv.ParseInt(strings.TrimSpace(string(b[:i])), 16, 64)
		if err != nil || size == 0 {
			break
		}
		b = b[i+2:]
		if int(size) > len(b) {
			size = int64(len(b))
		}
		out = append(out, b[:size]...)
		b = bytes.TrimPrefix(b[size:], []byte("\r\n"))
	}
	return out
}

// encodeFormData url-encodes key=value pairs that are not encoded yet, like go-ftw does
// for application/x-www-form-urlencoded test data.
func encodeFormData(data []byte) []byte {
	if un, err := url.QueryUnescape(string(data)); err != nil || un != string(data) {
		return data
	}
	var out bytes.Buffer
	for i, tok := range bytes.Split(data, []byte("&")) {
		if i > 0 {
			out.WriteByte('&')
		}
		k, v, ok := bytes.Cut(tok, []byte("="))
		out.WriteString(url.QueryEscape(string(k)))
		if ok {
			out.WriteByte('=')
			out.WriteString(url.QueryEscape(string(v)))
		}
	}
	return out.Bytes()
}
