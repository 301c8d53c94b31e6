// Package chunker splits a stream into content-defined chunks.
//
// It wraps github.com/PlakarKorp/go-cdc-chunkers' FastCDC (spec-faithful
// v1.0.0 variant) with a gear table keyed from the repository key. Keying
// matters for privacy: with a public gear table, the sequence of chunk sizes
// (which the storage sees) would identify known files. See
// docs/architecture.md for the benchmark against restic/chunker that chose it.
package chunker

import (
	"errors"
	"fmt"
	"io"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // registers fastcdc
)

// Params are stored in the repository config: every client of a repository
// must cut the same boundaries for deduplication to work.
type Params struct {
	Algorithm string `json:"algorithm"`
	Min       int    `json:"min"`
	Avg       int    `json:"avg"`
	Max       int    `json:"max"`
}

// Default is the design's min 512 KiB, avg 1 MiB, max 8 MiB.
var Default = Params{Algorithm: "fastcdc-v1.0.0", Min: 512 << 10, Avg: 1 << 20, Max: 8 << 20}

// Validate rejects parameters the chunker cannot honour.
func (p Params) Validate() error {
	if p.Algorithm != Default.Algorithm {
		return fmt.Errorf("chunker: unsupported algorithm %q", p.Algorithm)
	}
	if p.Min < 64 || p.Avg <= p.Min || p.Max <= p.Avg || p.Avg&(p.Avg-1) != 0 || p.Max > 64<<20 {
		return fmt.Errorf("chunker: invalid sizes min=%d avg=%d max=%d", p.Min, p.Avg, p.Max)
	}
	return nil
}

// Chunker cuts one stream at a time; Reset reuses its buffer for the next.
type Chunker struct {
	c    *chunkers.Chunker
	done bool
}

// New returns a chunker over rd.
func New(rd io.Reader, p Params, key []byte) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	// A scan window of 1.5x the largest chunk rather than the library's 2x:
	// each worker holds one, and the extra sliding costs little.
	c, err := chunkers.NewChunkerBuffer(p.Algorithm, rd, &chunkers.ChunkerOpts{
		MinSize: p.Min, NormalSize: p.Avg, MaxSize: p.Max, Key: key,
	}, make([]byte, p.Max+p.Max/2))
	if err != nil {
		return nil, fmt.Errorf("chunker: %w", err)
	}
	return &Chunker{c: c}, nil
}

// Reset starts a new stream with the same parameters and buffer.
func (c *Chunker) Reset(rd io.Reader) {
	c.c.Reset(rd)
	c.done = false
}

// Next returns the next chunk, valid only until the following call, or
// (nil, io.EOF) at the end. Every chunk it returns is non-empty.
func (c *Chunker) Next() ([]byte, error) {
	if c.done {
		return nil, io.EOF
	}
	data, err := c.c.Next()
	if errors.Is(err, io.EOF) {
		// The library reports the final short chunk together with io.EOF.
		c.done = true
		if len(data) > 0 {
			return data, nil
		}
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("chunker: %w", err)
	}
	if len(data) == 0 {
		c.done = true
		return nil, io.EOF
	}
	return data, nil
}
