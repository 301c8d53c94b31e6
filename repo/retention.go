package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Retention says which snapshots to keep (GDPR storage limitation). A
// snapshot is kept when any rule keeps it, unless it is older than MaxAge,
// which no rule overrides. The zero Retention keeps everything.
type Retention struct {
	KeepWithin time.Duration `json:"keep_within,omitempty"`
	Hourly     int           `json:"hourly,omitempty"`
	Daily      int           `json:"daily,omitempty"`
	Weekly     int           `json:"weekly,omitempty"`
	Monthly    int           `json:"monthly,omitempty"`
	MaxAge     time.Duration `json:"max_age,omitempty"`
	Set        time.Time     `json:"set"`
}

// IsZero reports whether no rule is set (everything is kept).
func (p Retention) IsZero() bool {
	return p.KeepWithin == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.MaxAge == 0
}

func (p Retention) String() string {
	if p.IsZero() {
		return "keep everything"
	}
	var parts []string
	if p.KeepWithin > 0 {
		parts = append(parts, "keep-within "+FormatDuration(p.KeepWithin))
	}
	for _, x := range []struct {
		n    int
		name string
	}{{p.Hourly, "hourly"}, {p.Daily, "daily"}, {p.Weekly, "weekly"}, {p.Monthly, "monthly"}} {
		if x.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", x.name, x.n))
		}
	}
	if p.MaxAge > 0 {
		parts = append(parts, "max-age "+FormatDuration(p.MaxAge))
	}
	return strings.Join(parts, ", ")
}

// ParseDuration accepts Go durations plus d (day), w (week), mo (30-day
// month) and y (365-day year) units: "24h", "30d", "2y", "1y6mo". A bare
// "m" keeps Go's meaning, minutes.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("invalid duration %q: negative", s)
		}
		return d, nil
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) {
			return 0, fmt.Errorf("invalid duration %q: want e.g. 24h, 30d, 12w, 6m, 2y", s)
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		j := i + 1
		if strings.HasPrefix(rest[i:], "mo") {
			j = i + 2
		}
		unit := map[string]time.Duration{"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour,
			"mo": 30 * 24 * time.Hour, "y": 365 * 24 * time.Hour}[rest[i:j]]
		if unit == 0 {
			return 0, fmt.Errorf("invalid duration %q: unknown unit %q (use m, h, d, w, mo, y)", s, rest[i:j])
		}
		total += time.Duration(n) * unit
		rest = rest[j:]
	}
	return total, nil
}

// FormatDuration prints d in the largest exact unit ParseDuration reads.
func FormatDuration(d time.Duration) string {
	for _, u := range []struct {
		d time.Duration
		s string
	}{{365 * 24 * time.Hour, "y"}, {30 * 24 * time.Hour, "mo"}, {7 * 24 * time.Hour, "w"}, {24 * time.Hour, "d"}} {
		if d >= u.d && d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.s
		}
	}
	return d.String()
}

// Decision is the fate of one snapshot under a policy.
type Decision struct {
	Snapshot *Snapshot `json:"-"`
	Keep     bool      `json:"keep"`
	Reasons  []string  `json:"reasons"`
}

// Apply decides for each snapshot (any order) at time now. Bucket rules
// keep the newest snapshot of each of the last N hours/days/weeks/months
// that have one, as restic's forget does. The newest snapshot of each
// source (hostname and source: a mount, an imported directory) is always
// kept unless it is older than max-age: it is that source's current data,
// whatever other clients wrote since.
func (p Retention) Apply(snaps []*Snapshot, now time.Time) []Decision {
	sorted := append([]*Snapshot(nil), snaps...)
	SortSnapshots(sorted)
	// Newest first for the bucket rules.
	for i, j := 0, len(sorted)-1; i < j; i, j = i+1, j-1 {
		sorted[i], sorted[j] = sorted[j], sorted[i]
	}
	out := make([]Decision, len(sorted))
	for i, s := range sorted {
		out[i].Snapshot = s
	}
	if p.IsZero() {
		for i := range out {
			out[i].Keep, out[i].Reasons = true, []string{"no retention policy"}
		}
		return out
	}
	type bucketRule struct {
		name string
		n    int
		key  func(time.Time) string
	}
	rules := []bucketRule{
		{"hourly", p.Hourly, func(t time.Time) string { return t.UTC().Format("2006-01-02T15") }},
		{"daily", p.Daily, func(t time.Time) string { return t.UTC().Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time) string { y, w := t.UTC().ISOWeek(); return fmt.Sprintf("%d-%02d", y, w) }},
		{"monthly", p.Monthly, func(t time.Time) string { return t.UTC().Format("2006-01") }},
	}
	for _, r := range rules {
		if r.n <= 0 {
			continue
		}
		seen := map[string]bool{}
		for i, s := range sorted {
			k := r.key(s.Time)
			if seen[k] || len(seen) >= r.n {
				continue
			}
			seen[k] = true
			out[i].Keep = true
			out[i].Reasons = append(out[i].Reasons, r.name)
		}
	}
	type source struct{ host, source string }
	seen := map[source]bool{} // sources whose newest snapshot came already
	onlyMaxAge := p.KeepWithin == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0
	for i, s := range sorted {
		if onlyMaxAge {
			out[i].Keep = true
			out[i].Reasons = append(out[i].Reasons, "younger than max-age")
		}
		if p.KeepWithin > 0 && now.Sub(s.Time) <= p.KeepWithin {
			out[i].Keep = true
			out[i].Reasons = append(out[i].Reasons, "within "+FormatDuration(p.KeepWithin))
		}
		src := source{s.Hostname, s.Source}
		if !seen[src] && !out[i].Keep {
			// A repository (or one of its clients) not backed up for
			// longer than keep-within would otherwise lose every
			// snapshot at the next prune. Only max-age, the hard
			// limit, may remove the newest.
			out[i].Keep = true
			out[i].Reasons = append(out[i].Reasons, "newest")
		}
		seen[src] = true
		if p.MaxAge > 0 && now.Sub(s.Time) > p.MaxAge {
			out[i].Keep = false
			out[i].Reasons = []string{"older than max-age " + FormatDuration(p.MaxAge)}
		}
		if !out[i].Keep && len(out[i].Reasons) == 0 {
			out[i].Reasons = []string{"no rule keeps it"}
		}
	}
	return out
}

const retentionAD = "keepfs retention v1"

// SetRetention stores p as the repository's policy, replacing any other.
func (r *Repository) SetRetention(ctx context.Context, p Retention) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	sealed := r.key.Seal(nil, b, []byte(retentionAD))
	id := crypto.Hash(sealed).String()
	var old []string
	if err := r.be.List(ctx, remote.Retention, func(fi remote.Info) error {
		old = append(old, fi.Handle.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("list retention: %w", err)
	}
	if err := r.be.Save(ctx, remote.Handle{Type: remote.Retention, Name: id}, sealed); err != nil {
		return fmt.Errorf("save retention: %w", err)
	}
	for _, n := range old {
		if n != id {
			if err := r.be.Remove(ctx, remote.Handle{Type: remote.Retention, Name: n}); err != nil && !errors.Is(err, remote.ErrNotFound) {
				return fmt.Errorf("remove old retention: %w", err)
			}
		}
	}
	return nil
}

// Retention loads the policy; with several stored (a crash during
// SetRetention), the most recently set wins.
func (r *Repository) Retention(ctx context.Context) (Retention, error) {
	var all []Retention
	err := r.be.List(ctx, remote.Retention, func(fi remote.Info) error {
		b, err := remote.LoadAll(ctx, r.be, fi.Handle)
		if err != nil {
			return err
		}
		plain, err := r.key.Open(nil, b, []byte(retentionAD))
		if err != nil {
			return fmt.Errorf("retention %s: %w", fi.Handle.Name, err)
		}
		var p Retention
		if err := json.Unmarshal(plain, &p); err != nil {
			return fmt.Errorf("retention %s: %w", fi.Handle.Name, err)
		}
		all = append(all, p)
		return nil
	})
	if err != nil {
		return Retention{}, err
	}
	if len(all) == 0 {
		return Retention{}, nil
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Set.Before(all[j].Set) })
	return all[len(all)-1], nil
}
