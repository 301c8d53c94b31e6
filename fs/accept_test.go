package fs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keepfs/keepfs/fs/fstest"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
)

// TestFirstHour follows the acceptance script's non-.versions steps on an
// in-process mount over a file remote: ordinary tools, dedup, no plaintext
// in the remote or the state directory, .gdprignore, recovery.
func TestFirstHour(t *testing.T) {
	fstest.RequireFUSE(t)
	ctx := context.Background()
	rdir := t.TempDir()
	be, err := remote.NewFile(rdir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Create(ctx, be, fstest.Password, repo.Options{KDF: &crypto.TestKDF}); err != nil {
		t.Fatal(err)
	}
	m := fstest.New(t, fstest.Config{Remote: be})
	M := m.Dir
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	os.MkdirAll(filepath.Join(M, "docs/deep/er"), 0o755)
	os.MkdirAll(filepath.Join(M, "media"), 0o755)
	os.WriteFile(filepath.Join(M, "docs/jane-doe-contract.txt"), []byte("Jane Doe\nMARKER-7f3a9c-contract v1\n"), 0o644)
	for i := 1; i <= 200; i++ {
		os.WriteFile(filepath.Join(M, fmt.Sprintf("docs/deep/er/note-%d.txt", i)), []byte(fmt.Sprintf("note %d MARKER-7f3a9c\n", i)), 0o644)
	}
	big := make([]byte, 20<<20)
	rand.Read(big)
	src := filepath.Join(t.TempDir(), "big.bin")
	os.WriteFile(src, big, 0o644)
	run("cp", src, filepath.Join(M, "media/big.bin"))
	run("cp", filepath.Join(M, "media/big.bin"), filepath.Join(M, "media/big-copy.bin"))
	run("cmp", src, filepath.Join(M, "media/big-copy.bin"))
	os.Symlink("../docs/jane-doe-contract.txt", filepath.Join(M, "media/link"))
	if b, err := os.ReadFile(filepath.Join(M, "media/link")); err != nil || !bytes.Contains(b, []byte("contract v1")) {
		t.Fatalf("symlink: %v", err)
	}
	os.WriteFile(filepath.Join(M, ".gdprignore"), []byte("secret/\n*.tmp\n"), 0o644)
	os.Mkdir(filepath.Join(M, "secret"), 0o755)
	os.WriteFile(filepath.Join(M, "secret/passport.txt"), []byte("passport MARKER-55e1d0\n"), 0o644)
	os.WriteFile(filepath.Join(M, "x.tmp"), []byte("scratch MARKER-55e1d0\n"), 0o644)
	sn, err := m.Cache.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	run("cmp", src, filepath.Join(M, ".versions/latest/media/big.bin"))
	if _, err := os.Stat(filepath.Join(M, ".versions/latest/secret")); err == nil {
		t.Error("ignored directory visible in .versions/latest")
	}
	if err := os.WriteFile(filepath.Join(M, ".versions/latest/new"), nil, 0o644); err == nil {
		t.Error(".versions accepted a write")
	}
	if _, err := m.Repo.Lookup(ctx, sn.Tree, "/secret"); err == nil {
		t.Error("ignored directory in the snapshot")
	}
	for _, pat := range []string{"MARKER-7f3a9c", "jane-doe-contract", "MARKER-55e1d0"} {
		if exec.Command("grep", "-rqa", pat, rdir, m.StateDir).Run() == nil {
			t.Errorf("plaintext %q in the remote or state directory", pat)
		}
	}
	var used int64
	filepath.Walk(rdir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			used += fi.Size()
		}
		return nil
	})
	if used < 20<<20 || used > 20<<20*13/10 {
		t.Errorf("remote holds %d bytes for two 20 MiB copies", used)
	}
	m.Close(t)

	m2 := fstest.New(t, fstest.Config{Remote: be})
	run("cmp", src, filepath.Join(m2.Dir, "media/big.bin"))
	ents, _ := os.ReadDir(filepath.Join(m2.Dir, "docs/deep/er"))
	if len(ents) != 200 {
		t.Fatalf("recovered %d notes", len(ents))
	}
	if _, err := os.Stat(filepath.Join(m2.Dir, "secret")); err == nil {
		t.Error("ignored directory recovered from the remote")
	}
}
