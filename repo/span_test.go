package repo_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// LoadBlobs reads blobs of one pack with one read and hands each out,
// a blob named twice included (in place decryption must not open it twice).
func TestLoadBlobsSpan(t *testing.T) {
	ctx := context.Background()
	_, r := newRepo(t)
	var ids []crypto.ID
	want := map[crypto.ID][]byte{}
	for i := 0; i < 5; i++ {
		b := bytes.Repeat([]byte(fmt.Sprintf("blob %d ", i)), 100*(i+1))
		if i%2 == 1 {
			b = []byte(fmt.Sprintf("incompressible %d", i))
		}
		id, _, err := r.SaveBlob(ctx, pack.Data, b)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		want[id] = b
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ask := []crypto.ID{ids[3], ids[0], ids[0], ids[4], ids[0], ids[1], ids[3]}
	n := 0
	err := r.LoadBlobs(ctx, pack.Data, ask, func(i int, plain []byte) error {
		if !bytes.Equal(plain, want[ask[i]]) {
			t.Errorf("blob %d (%s): %q", i, ask[i].Short(), plain)
		}
		n++
		return nil
	})
	if err != nil || n != len(ask) {
		t.Fatalf("LoadBlobs: %d of %d, %v", n, len(ask), err)
	}
	if err := r.LoadBlobs(ctx, pack.Data, []crypto.ID{ids[0], {1}}, func(int, []byte) error { return nil }); err == nil {
		t.Fatal("LoadBlobs of an unknown blob succeeded")
	}
}
