package grpctls

import (
	"path/filepath"
	"strings"
	"testing"
)

// Every inconsistency of the GRPC_TLS_* settings is refused before anything listens.
func TestOptionsCheckRefusesHalfConfigurations(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string // "" = fine
	}{
		{Options{}, ""},
		{Options{CertFile: "c", KeyFile: "k"}, ""},
		{Options{CertFile: "c", KeyFile: "k", ClientCAFile: "ca", RequireClientCert: true}, ""},
		{Options{CertFile: "c"}, "both a certificate file and a key file"},
		{Options{KeyFile: "k"}, "both a certificate file and a key file"},
		{Options{CertFile: "c", KeyFile: "k", RequireClientCert: true}, "client CA"},
		{Options{RequireClientCert: true}, "without TLS"},
		{Options{ClientCAFile: "ca", RequireClientCert: true}, "both a certificate file and a key file"},
	} {
		err := tc.o.Check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.o, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
}

// A file that is missing at start stops the start (naming the file), instead of a port that
// fails every handshake.
func TestNewFailsOnMissingFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := New(Options{CertFile: filepath.Join(dir, "nope.crt"), KeyFile: filepath.Join(dir, "nope.key")}, nil)
	if err == nil || !strings.Contains(err.Error(), "nope.crt") {
		t.Fatalf("got %v", err)
	}
}
