package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, dir, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// A profile supplies repo, state and password file; flags and environment
// override it; the default path is under XDG_CONFIG_HOME.
func TestConfigProfiles(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "")
	w := t.TempDir()
	pass := filepath.Join(w, "pass")
	writeFile(t, pass, "profile words\n")
	src := filepath.Join(w, "src")
	writeFile(t, filepath.Join(src, "a.txt"), "alpha\n")
	remoteA, remoteB := filepath.Join(w, "remoteA"), filepath.Join(w, "remoteB")
	cfg := writeConfig(t, w, `
[profiles.a]
repo = "file://`+remoteA+`"
state = "`+filepath.Join(w, "stateA")+`"
password-file = "`+pass+`"
retry-lock = "1s"
cache-size = "64MiB"
future-key = 1

[profiles.b]
repo = "file://`+remoteB+`"
password-file = "`+pass+`"
`, 0o644)
	code, _, errs := kf(t, "--config", cfg, "--profile", "a", "init")
	if code != 0 {
		t.Fatalf("init with profile a: %d %s", code, errs)
	}
	if !strings.Contains(errs, `unknown key "future-key" ignored`) || strings.Contains(errs, "cache-size") {
		t.Errorf("warnings: %q", errs)
	}
	if _, err := os.Stat(filepath.Join(remoteA, "config")); err != nil {
		t.Fatalf("profile a's repository was not created: %v", err)
	}
	// KEEPFS_PROFILE picks the profile; --repo overrides its repo.
	t.Setenv("KEEPFS_PROFILE", "b")
	mustKF(t, "--config", cfg, "init")
	mustKF(t, "--config", cfg, "--repo", "file://"+remoteA, "import", src)
	out := mustKF(t, "--config", cfg, "--profile", "a", "snapshots", "--json")
	if !strings.Contains(out, src) {
		t.Fatalf("import through --repo override went elsewhere: %s", out)
	}
	// The environment overrides the file too.
	t.Setenv("KEEPFS_REPO", "file://"+remoteB)
	if out := mustKF(t, "--config", cfg, "--profile", "a", "snapshots", "--json"); strings.Contains(out, src) {
		t.Fatalf("KEEPFS_REPO did not override the profile: %s", out)
	}
	os.Unsetenv("KEEPFS_REPO")
	t.Setenv("KEEPFS_PROFILE", "")

	// The default file: $XDG_CONFIG_HOME/keepfs/config.toml.
	xdg := filepath.Join(w, "xdg")
	writeFile(t, filepath.Join(xdg, "keepfs", "config.toml"), "[profiles.a]\nrepo = \"file://"+remoteA+"\"\npassword-file = \""+pass+"\"\n")
	t.Setenv("XDG_CONFIG_HOME", xdg)
	if out := mustKF(t, "--profile", "a", "snapshots", "--json"); !strings.Contains(out, src) {
		t.Fatalf("default config file not used: %s", out)
	}
}

func TestConfigErrors(t *testing.T) {
	w := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(w, "none"))
	t.Setenv("KEEPFS_PROFILE", "")
	cases := []struct {
		name, body string
		mode       os.FileMode
		args       []string
		want       string
	}{
		{"bad toml", "[profiles.a\nrepo=1", 0o600, []string{"--profile", "a"}, "line 2: expected"},
		{"unknown profile", "[profiles.a]\nrepo = \"file:///x\"\n[profiles.b]\n", 0o600, []string{"--profile", "c"}, `has no profile "c" (it has: a, b)`},
		{"top-level key", "repo = \"file:///x\"\n", 0o600, []string{"--profile", "a"}, `unknown key "repo"`},
		{"readable password", "[profiles.a]\nrepo = \"file:///x\"\npassword = \"hunter2 words\"\n", 0o644, []string{"--profile", "a"}, "chmod 600"},
		{"bad value", "[profiles.a]\nretry-lock = \"soon\"\n", 0o600, []string{"--profile", "a"}, "retry-lock"},
		{"bool for string", "[profiles.a]\nrepo = true\n", 0o600, []string{"--profile", "a"}, "repo"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, t.TempDir(), tc.body, tc.mode)
			code, out, errs := kf(t, append(append([]string{"--config", cfg}, tc.args...), "snapshots")...)
			if code != exitUsage || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") > 1 {
				t.Fatalf("exit %d, stderr %q, want exit 2 and %q in one line", code, errs, tc.want)
			}
			if strings.Contains(out+errs, "hunter2") {
				t.Fatal("the password was printed")
			}
		})
	}
	if code, _, errs := kf(t, "--profile", "x", "snapshots"); code != exitUsage || !strings.Contains(errs, "no config file") {
		t.Fatalf("missing default config: %d %q", code, errs)
	}
}

// A password in the file works only when the file is private; the
// command line's --password-file wins over it.
func TestConfigPassword(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "")
	t.Setenv("KEEPFS_PROFILE", "")
	w := t.TempDir()
	remote := filepath.Join(w, "remote")
	cfg := writeConfig(t, w, "[profiles.a]\nrepo = \"file://"+remote+"\"\npassword = \"file words\"\n", 0o600)
	mustKF(t, "--config", cfg, "--profile", "a", "init")
	mustKF(t, "--config", cfg, "--profile", "a", "snapshots")
	other := filepath.Join(w, "other")
	writeFile(t, other, "other words\n")
	if code, _, errs := kf(t, "--config", cfg, "--profile", "a", "--password-file", other, "snapshots"); code == 0 || !strings.Contains(errs, "wrong passphrase") {
		t.Fatalf("--password-file did not override the profile's password: %d %q", code, errs)
	}
}
