// Command synthrepo writes a synthetic keepfs repository of N blobs for
// the scale benchmark (bench.sh section scale, scale_index.sh): real
// config, key slot, index segments and pack headers in the repository's
// formats, but no blob data. Each pack is a sparse file of the length its
// blobs would take, followed by its sealed header, so everything that
// reads the index or pack headers sees a repository of that size; reading
// a blob fails (its bytes are zeros). Pack ids are random, not the hash of
// the pack (check would report them), and index segments name 1,000 packs
// each, as compaction leaves them.
//
// The key slot uses the cheapest KDF allowed (argon2id t=1, 8 MiB) unless
// -default-kdf: the default's unlock (64 MiB, about 3 s on a small VM) is
// a constant that would hide what the index costs.
//
//	synthrepo -repo DIR -blobs N [-per-pack 64]   (passphrase: $KEEPFS_PASSWORD)
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
	"github.com/keepfs/keepfs/repo/pack"
)

const headerAD = "keepfs pack header v1" // repo/pack: the AD of a sealed header

func main() {
	dir := flag.String("repo", "", "directory of the new repository (file backend)")
	n := flag.Int("blobs", 100000, "number of blobs")
	per := flag.Int("per-pack", 64, "blobs per pack")
	perSeg := flag.Int("packs-per-segment", 1000, "packs per index segment")
	defaultKDF := flag.Bool("default-kdf", false, "protect the key slot with the default KDF (else the cheapest allowed, so that unlock does not dominate a mount's start and peak RSS)")
	flag.Parse()
	pw := os.Getenv("KEEPFS_PASSWORD")
	if *dir == "" || pw == "" || *n <= 0 || *per <= 0 {
		log.Fatal("usage: KEEPFS_PASSWORD=... synthrepo -repo DIR -blobs N [-per-pack 64]")
	}
	start := time.Now()
	ctx := context.Background()
	be, err := remote.CreateFile(*dir)
	if err != nil {
		log.Fatal(err)
	}
	opts := repo.Options{KDF: &crypto.KDFParams{Time: 1, Memory: 8 << 10, Threads: 1}}
	if *defaultKDF {
		opts.KDF = nil
	}
	r, err := repo.Create(ctx, be, []byte(pw), opts)
	if err != nil {
		log.Fatal(err)
	}
	k := r.Key()
	packs := (*n + *per - 1) / *per
	segs := (packs + *perSeg - 1) / *perSeg
	g := errgroup.Group{}
	g.SetLimit(runtime.GOMAXPROCS(0) * 2)
	for s := 0; s < segs; s++ {
		g.Go(func() error {
			rng := mrand.New(mrand.NewPCG(uint64(s), 42))
			seg := &index.Segment{}
			for p := s * *perSeg; p < min(packs, (s+1)**perSeg); p++ {
				nb := min(*per, *n-p**per)
				pe, err := writePack(*dir, k, rng, nb)
				if err != nil {
					return err
				}
				seg.Packs = append(seg.Packs, pe)
			}
			sealed := seg.Seal(k)
			id := crypto.Hash(sealed)
			return be.Save(ctx, remote.Handle{Type: remote.Index, Name: id.String()}, sealed)
		})
	}
	if err := g.Wait(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d blobs in %d packs, %d index segments, in %.1f s\n", *n, packs, segs, time.Since(start).Seconds())
}

// writePack writes a sparse pack of nb made-up data blobs (256 KiB on
// average) and returns its index entry.
func writePack(dir string, k *crypto.Key, rng *mrand.Rand, nb int) (index.PackEntry, error) {
	var pe index.PackEntry
	if _, err := rand.Read(pe.ID[:]); err != nil {
		return pe, err
	}
	var off uint32
	for i := 0; i < nb; i++ {
		b := pack.Blob{Type: pack.Data, Offset: off, Length: 128<<10 + uint32(rng.IntN(256<<10))}
		if i%16 == 15 {
			b.Type, b.Length = pack.Tree, 512+uint32(rng.IntN(4096))
		}
		b.RawLength = b.Length - 40
		if _, err := rand.Read(b.ID[:]); err != nil {
			return pe, err
		}
		off += b.Length
		pe.Blobs = append(pe.Blobs, b)
	}
	hdr := k.Seal(nil, pack.EncodeHeader(pe.Blobs), []byte(headerAD))
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(hdr)))
	pe.Size = int64(off) + int64(len(hdr))
	path := filepath.Join(dir, remote.ObjectPath(remote.Handle{Type: remote.Pack, Name: pe.ID.String()}))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return pe, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return pe, err
	}
	if _, err := f.WriteAt(hdr, int64(off)); err != nil {
		f.Close()
		return pe, err
	}
	return pe, f.Close()
}
