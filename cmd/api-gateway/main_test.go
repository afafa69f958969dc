package main

import (
	"strings"
	"testing"
)

// Every subcommand of the table is in the usage text, and the usage names no other.
func TestUsageListsEveryCommand(t *testing.T) {
	var out, errOut strings.Builder
	cmds := commands(&out, &errOut)
	usage(&errOut)
	text := errOut.String()
	for name := range cmds {
		if strings.HasPrefix(name, "-") || name == "help" {
			continue
		}
		if !strings.Contains(text, "api-gateway "+name+" ") && !strings.Contains(text, "api-gateway ["+name+"]") {
			t.Errorf("usage does not list %s", name)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "api-gateway" {
			if _, ok := cmds[strings.Trim(f[1], "[]")]; !ok {
				t.Errorf("usage lists %s, which is no command", f[1])
			}
		}
	}
	if code := cmds["version"](nil); code != 0 || out.String() != "api-gateway "+version+"\n" {
		t.Errorf("version: %d %q", code, out.String())
	}
}
