package repo_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// StreamBlobs reads blobs of one pack in offset order with one read,
// skipping the blobs between them, and refuses what it cannot stream
// (out of order, named twice, not indexed) and a tampered blob.
func TestStreamBlobs(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
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
	ask := []crypto.ID{ids[0], ids[2], ids[3]}
	n := 0
	err := r.StreamBlobs(ctx, pack.Data, ask, func(i int, plain []byte) error {
		if !bytes.Equal(plain, want[ask[i]]) {
			t.Errorf("blob %d (%s): %q", i, ask[i].Short(), plain)
		}
		n++
		return nil
	})
	if err != nil || n != len(ask) {
		t.Fatalf("StreamBlobs: %d of %d, %v", n, len(ask), err)
	}
	for _, bad := range [][]crypto.ID{{ids[2], ids[0]}, {ids[1], ids[1]}, {ids[0], {1}}} {
		if err := r.StreamBlobs(ctx, pack.Data, bad, func(int, []byte) error { return nil }); err == nil {
			t.Fatalf("StreamBlobs of %v succeeded", bad)
		}
	}
	loc, _ := r.Index().Lookup(pack.Data, ids[3])
	h := remote.Handle{Type: remote.Pack, Name: loc.Pack.String()}
	data, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data[loc.Offset+loc.Length/2] ^= 1
	be.Replace(h, data)
	n = 0
	err = r.StreamBlobs(ctx, pack.Data, ask, func(int, []byte) error { n++; return nil })
	if err == nil || n != 2 {
		t.Fatalf("StreamBlobs over a tampered third blob: %d handed out, %v; want the first two and an error", n, err)
	}
}
