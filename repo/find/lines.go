package find

import (
	"bufio"
	"errors"
	"io"
	"regexp"
)

// lineResult is what scanLines found in one stream.
type lineResult struct {
	lines []int // matching line numbers, at most max of them
	more  int   // matching lines beyond those
	split bool  // some line was longer than maxLine and searched in pieces
}

// scanLines reports the 1-based numbers of the lines of rd that re
// matches. A line is searched without its "\n" (or "\r\n"). Memory is
// bounded by maxLine: a longer line is searched in pieces of maxLine bytes,
// each overlapping the previous by maxLine/16.
func scanLines(rd io.Reader, re *regexp.Regexp, maxLine, max int) (lineResult, error) {
	var res lineResult
	br := bufio.NewReaderSize(rd, min(64<<10, maxLine))
	overlap := maxLine / 16
	var (
		acc     []byte // the current line so far, when it spans reads
		matched bool   // an earlier piece of the current line matched
		lineNo  int
	)
	hit := func() {
		if len(res.lines) < max {
			res.lines = append(res.lines, lineNo)
		} else {
			res.more++
		}
	}
	for {
		frag, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			acc = append(acc, frag...)
			if len(acc) >= maxLine {
				res.split = true
				if !matched && re.Match(acc) {
					matched = true
				}
				n := copy(acc, acc[len(acc)-overlap:])
				acc = acc[:n]
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return res, err
		}
		if len(frag) > 0 || len(acc) > 0 {
			line := frag
			if len(acc) > 0 {
				acc = append(acc, frag...)
				line = acc
			}
			if n := len(line); n > 0 && line[n-1] == '\n' {
				line = line[:n-1]
				if n := len(line); n > 0 && line[n-1] == '\r' {
					line = line[:n-1]
				}
			}
			lineNo++
			if matched || re.Match(line) {
				hit()
			}
			acc, matched = acc[:0], false
		}
		if err != nil { // io.EOF
			return res, nil
		}
	}
}
