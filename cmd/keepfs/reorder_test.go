package main

import (
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestReorderArgs(t *testing.T) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	for _, tc := range []struct{ in, want string }{
		{"keepfs restore /docs --to out", "keepfs restore --to out /docs"},
		{"keepfs restore /docs --to=out --at 2026-11-28", "keepfs restore --to=out --at 2026-11-28 /docs"},
		{"keepfs --repo r restore /a /b --json --to x", "keepfs --repo r restore --json --to x /a /b"},
		{"keepfs import dir --repo file:///r --state s", "keepfs --repo file:///r --state s import dir"},
		{"keepfs restore --to out -- --weird", "keepfs restore --to out -- --weird"},
		{"keepfs key remove abc --password-file f", "keepfs --password-file f key remove abc"},
		{"keepfs check --read-data", "keepfs check --read-data"},
		{"keepfs ignore check x -v", "keepfs ignore check -v x"},
		{"keepfs", "keepfs"},
		{"keepfs nosuch --flag a", "keepfs nosuch --flag a"},
	} {
		got := reorderArgs(app, strings.Fields(tc.in))
		if !reflect.DeepEqual(got, strings.Fields(tc.want)) {
			t.Errorf("%s:\n got  %q\n want %q", tc.in, got, strings.Fields(tc.want))
		}
	}
}
