package remote_test

import (
	"bytes"
	"context"
	"errors"
	"math/bits"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
)

func TestFaultyCorruptLoads(t *testing.T) {
	ctx := context.Background()
	f := remote.NewFaulty(remote.NewMem())
	data := bytes.Repeat([]byte{0xAA}, 100)
	if err := f.Save(ctx, testHandle, data); err != nil {
		t.Fatal(err)
	}
	f.CorruptLoads(true)
	got, err := remote.LoadAll(ctx, f, testHandle)
	if err != nil {
		t.Fatal(err)
	}
	flipped := 0
	for i := range data {
		flipped += bits.OnesCount8(data[i] ^ got[i])
	}
	if flipped != 1 {
		t.Fatalf("%d bits differ, want exactly 1", flipped)
	}
	f.CorruptLoads(false)
	if got, _ := remote.LoadAll(ctx, f, testHandle); !bytes.Equal(got, data) {
		t.Fatal("corruption reached the stored object")
	}
}

func TestFaultyTruncatedSaveLeavesNothing(t *testing.T) {
	ctx := context.Background()
	f := remote.NewFaulty(remote.NewMem())
	f.TruncateNextSaves(1)
	err := f.Save(ctx, testHandle, []byte("data"))
	if !errors.Is(err, remote.ErrUnreachable) || !errors.Is(err, remote.ErrInjected) {
		t.Fatalf("truncated save: %v", err)
	}
	if _, err := f.Stat(ctx, testHandle); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("truncated save left an object: %v", err)
	}
	if err := f.Save(ctx, testHandle, []byte("data")); err != nil {
		t.Fatalf("save after the fault: %v", err)
	}
}

func TestFaultyBreakAndHeal(t *testing.T) {
	ctx := context.Background()
	f := remote.NewFaulty(remote.NewMem())
	if err := f.Save(ctx, testHandle, []byte("x")); err != nil {
		t.Fatal(err)
	}
	f.Break()
	_, lerr := f.Load(ctx, testHandle, 0, 0)
	_, serr := f.Stat(ctx, testHandle)
	for op, err := range map[string]error{
		"save":   f.Save(ctx, remote.Handle{Type: remote.Key, Name: "k"}, nil),
		"load":   lerr,
		"stat":   serr,
		"list":   f.List(ctx, remote.Pack, func(remote.Info) error { return nil }),
		"remove": f.Remove(ctx, testHandle),
	} {
		if !errors.Is(err, remote.ErrUnreachable) {
			t.Errorf("%s on a broken remote: %v, want ErrUnreachable", op, err)
		}
	}
	f.Heal()
	if _, err := f.Stat(ctx, testHandle); err != nil {
		t.Fatalf("stat after heal: %v", err)
	}
	if f.Calls(remote.OpStat) != 2 || f.Calls(remote.OpSave) != 2 {
		t.Fatalf("call counts stat=%d save=%d", f.Calls(remote.OpStat), f.Calls(remote.OpSave))
	}
}

func TestFaultyDelayHonoursContext(t *testing.T) {
	f := remote.NewFaulty(remote.NewMem())
	f.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.Stat(ctx, testHandle); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stat: %v", err)
	}
}

func TestMemReplaceTampers(t *testing.T) {
	ctx := context.Background()
	m := remote.NewMem()
	if err := m.Save(ctx, testHandle, []byte("good")); err != nil {
		t.Fatal(err)
	}
	m.Replace(testHandle, []byte("evil"))
	if got, _ := remote.LoadAll(ctx, m, testHandle); string(got) != "evil" {
		t.Fatalf("after Replace: %q", got)
	}
}
