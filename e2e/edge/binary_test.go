package edge_test

import (
	"bytes"
	"context"
	"mime/multipart"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// TestBinaryChecksBodyOverGRPCDefaultLimit: the built binary's Check server accepts a
// CheckRequest carrying a WAF route's whole body past grpc-go's 4 MiB default receive
// limit (Envoy sends bodies up to max_request_body_size, 10 MiB by default), and the WAF
// judges it: a 6 MiB multipart upload passes, the same upload with an SQL injection in a
// field after the file is blocked.
func TestBinaryChecksBodyOverGRPCDefaultLimit(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{})
	if code, raw := g.Do("POST", "/api/v1/management/routes", map[string]any{
		"id": "uploads", "require_auth": false, "waf": map[string]any{"mode": "block"},
		"conditions": []any{map[string]any{"path_prefix": "/uploads"}},
		"targets":    []any{map[string]any{"host": "127.0.0.1", "port": 9}},
	}, nil); code != 201 {
		t.Fatalf("create route: %d %s", code, raw)
	}
	conn, err := grpc.NewClient(g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)

	e := &edge{t: t}
	check := func(body []byte, contentType string) (*authv3.CheckResponse, error) {
		req, _ := e.checkRequest(httpReq{method: "POST", path: "/uploads/1", body: body,
			headers: [][2]string{{"Content-Type", contentType}}}, "/uploads/1", nil)
		// As the served route sends it: the whole body, marked whole, with the route id.
		req.Attributes.Request.Http.RawBody = body
		req.Attributes.Request.Http.Headers["x-envoy-auth-partial-body"] = "false"
		req.Attributes.ContextExtensions = map[string]string{"route_id": "uploads"}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return client.Check(ctx, req)
	}
	// The route is applied asynchronously: wait until a small request passes.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := check([]byte(`{"a":1}`), "application/json")
		if err == nil && resp.GetOkResponse() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the route never allowed a small request: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	upload := func(field, value string) ([]byte, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		fw, _ := mw.CreateFormFile("file", "notes.txt")
		line := []byte("an ordinary line of a text attachment, nothing to see here\n")
		for b.Len() < 6<<20 {
			_, _ = fw.Write(line)
		}
		_ = mw.WriteField(field, value)
		_ = mw.Close()
		return b.Bytes(), mw.FormDataContentType()
	}
	body, ct := upload("title", "quarterly notes")
	resp, err := check(body, ct)
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("6 MiB valid upload: want allowed, got %v %v", resp.GetStatus(), err)
	}
	body, ct = upload("title", "1' UNION SELECT password FROM users--")
	resp, err = check(body, ct)
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Fatalf("6 MiB upload with SQLi after the file: want 403, got %v %v", resp.GetStatus(), err)
	}
}
