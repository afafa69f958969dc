package store

import (
	"strings"
	"testing"
	"time"
)

func TestParseRedisURL(t *testing.T) {
	cases := []struct {
		url      string
		addrs    []string
		db       int
		master   string
		cluster  bool
		tls      bool
		user     string
		pass     string
		sentPass string
		prefix   string
		poll     time.Duration
		dial     time.Duration
	}{
		{url: "redis://localhost", addrs: []string{"localhost:6379"}, prefix: "agw", poll: 500 * time.Millisecond},
		{url: "redis://:secret@10.0.0.1:6380/2?dial_timeout=3s", addrs: []string{"10.0.0.1:6380"}, db: 2, pass: "secret", dial: 3 * time.Second, prefix: "agw", poll: 500 * time.Millisecond},
		{url: "rediss://u:p@cache.example.com:6380?prefix=gw1&poll_interval=2s", addrs: []string{"cache.example.com:6380"}, tls: true, user: "u", pass: "p", prefix: "gw1", poll: 2 * time.Second},
		{url: "redis-sentinel://s1:26379,s2,s3:26380/mymaster?db=3&sentinel_password=sp", addrs: []string{"s1:26379", "s2:26379", "s3:26380"}, master: "mymaster", db: 3, sentPass: "sp", prefix: "agw", poll: 500 * time.Millisecond},
		{url: "redis-sentinel://:pw@s1/mymaster/4", addrs: []string{"s1:26379"}, master: "mymaster", db: 4, pass: "pw", prefix: "agw", poll: 500 * time.Millisecond},
		{url: "redis-cluster://h1:7000,h2:7001,[::1]:7002", addrs: []string{"h1:7000", "h2:7001", "[::1]:7002"}, cluster: true, prefix: "agw", poll: 500 * time.Millisecond},
		{url: "redis-cluster://h1:7000", addrs: []string{"h1:7000"}, cluster: true, prefix: "agw", poll: 500 * time.Millisecond},
		{url: "rediss-cluster://h1:7000,h2:7001", addrs: []string{"h1:7000", "h2:7001"}, cluster: true, tls: true, prefix: "agw", poll: 500 * time.Millisecond},
		{url: "10.1.1.1:6380", addrs: []string{"10.1.1.1:6380"}, prefix: "agw", poll: 500 * time.Millisecond},
		{url: "redis+sentinel://s1:26379?addr=s2:26379&master_name=m1", addrs: []string{"s1:26379", "s2:26379"}, master: "m1", prefix: "agw", poll: 500 * time.Millisecond},
		{url: "redis+cluster://h1:7000?addr=h2:7001&dial_timeout=1s", addrs: []string{"h1:7000", "h2:7001"}, cluster: true, dial: time.Second, prefix: "agw", poll: 500 * time.Millisecond},
	}
	for _, c := range cases {
		o, so, err := parseRedisURL(c.url)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		if strings.Join(o.Addrs, ",") != strings.Join(c.addrs, ",") || o.DB != c.db || o.MasterName != c.master ||
			o.IsClusterMode != c.cluster || (o.TLSConfig != nil) != c.tls || o.Username != c.user || o.Password != c.pass ||
			o.SentinelPassword != c.sentPass || so.prefix != c.prefix || so.poll != c.poll || o.DialTimeout != c.dial {
			t.Errorf("%s: got addrs=%v db=%d master=%q cluster=%v tls=%v user=%q pass=%q sentinelPass=%q prefix=%q poll=%s dial=%s",
				c.url, o.Addrs, o.DB, o.MasterName, o.IsClusterMode, o.TLSConfig != nil, o.Username, o.Password,
				o.SentinelPassword, so.prefix, so.poll, o.DialTimeout)
		}
	}
	bad := []string{
		"",                                    // empty
		"redis://h1?addr=h2",                  // addr needs sentinel/cluster
		"redis+cluster://h1?master_name=m",    // master_name needs sentinel
		"http://localhost",                    // wrong scheme
		"redis://h1:1,h2:2",                   // several hosts, single scheme
		"redis-sentinel://s1:26379",           // no master name
		"redis-cluster://h1:7000/1",           // cluster has db 0 only
		"redis://localhost?dial_timeot=3s",    // typo: unknown option
		"redis://localhost?prefix={x}",        // prefix with braces
		"redis://localhost?poll_interval=-1s", // bad poll
		"redis://localhost?sentinel_password=x",
		"redis://",
	}
	for _, u := range bad {
		if _, err := ParseRedisURL(u); err == nil {
			t.Errorf("%s: accepted", u)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:secret@h:6379/0":                      "redis://:xxxxx@h:6379/0",
		"redis://user:secret@h":                         "redis://user:xxxxx@h",
		"redis://h:6379":                                "redis://h:6379",
		"redis-sentinel://s1/m?sentinel_password=abc&x": "redis-sentinel://s1/m?sentinel_password=xxxxx&x",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}
