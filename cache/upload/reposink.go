package upload

import (
	"context"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// RepoSink is repository r as the queue's Sink: chunks become data blobs
// under their own ids.
func RepoSink(r *repo.Repository) Sink { return repoSink{r} }

type repoSink struct{ r *repo.Repository }

func (s repoSink) SaveData(ctx context.Context, id crypto.ID, data []byte) error {
	_, err := s.r.SaveBlobWithID(ctx, pack.Data, id, data)
	return err
}

func (s repoSink) Flush(ctx context.Context) error { return s.r.Flush(ctx) }
func (s repoSink) Has(id crypto.ID) bool           { return s.r.Index().Has(pack.Data, id) }
func (s repoSink) DiscardUnflushed() int           { return s.r.DiscardUnflushed() }
