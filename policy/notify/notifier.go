package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// SignatureHeader carries the webhook body's HMAC-SHA256 under the secret.
const SignatureHeader = "X-Keepfs-Signature"

// Sign is the value of SignatureHeader for body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Options configure a Notifier; zero values pick defaults.
type Options struct {
	// Exec is run with `sh -c`, the event JSON on stdin; exit 0 delivers.
	Exec string
	// Webhook is POSTed the event JSON; a 2xx answer delivers.
	Webhook string
	// Secret keys the webhook's SignatureHeader (none if empty).
	Secret []byte
	// ExecTimeout bounds one run of the hook (default 10 s); ExecAttempts
	// how often it is tried (default 3).
	ExecTimeout  time.Duration
	ExecAttempts int
	// Expire is how long a webhook delivery is retried (default 24 h).
	Expire time.Duration
	// Host names this machine in events (default os.Hostname).
	Host   string
	Logger *slog.Logger
	Now    func() time.Time
	// HTTPClient for the webhook (default: 10 s timeout).
	HTTPClient *http.Client
	// Backoff is the first retry delay (default 500 ms; doubles to 5 min).
	Backoff time.Duration
}

// Notifier raises events: it opens or counts incidents, logs them, hands
// new ones to the audit hook and delivers them to every target. Events
// raised before Bind are kept in memory and stored at Bind.
type Notifier struct {
	o   Options
	log *slog.Logger

	ctx    context.Context // cancelled by Close's deadline
	cancel context.CancelFunc
	wg     sync.WaitGroup // deliveries and audit appends in flight

	// mu guards everything below. Lock order: mu, then the store's flock.
	mu     sync.Mutex
	store  *Store
	repoID string
	audit  func(Event)
	// active maps the key of every incident this process raised or found
	// open to its id; dups counts events suppressed since the last flush.
	active  map[string]string
	dups    map[string]int64
	pending []Incident // raised before Bind
	closed  bool
	flushT  *time.Timer
}

// New returns a notifier delivering to the targets in o.
func New(o Options) *Notifier {
	if o.ExecTimeout <= 0 {
		o.ExecTimeout = 10 * time.Second
	}
	if o.ExecAttempts <= 0 {
		o.ExecAttempts = 3
	}
	if o.Expire <= 0 {
		o.Expire = 24 * time.Hour
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	n := &Notifier{o: o, log: o.Logger, active: map[string]string{}, dups: map[string]int64{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n
}

// Targets names the configured targets in their redacted form.
func (n *Notifier) Targets() []string {
	var t []string
	if n.o.Exec != "" {
		t = append(t, ExecTarget(n.o.Exec))
	}
	if n.o.Webhook != "" {
		t = append(t, WebhookTarget(n.o.Webhook))
	}
	return t
}

// ExecTarget names an exec hook by its program only: its arguments may
// hold secrets.
func ExecTarget(cmd string) string {
	f := strings.Fields(cmd)
	if len(f) == 0 {
		return "exec"
	}
	return "exec " + f[0]
}

// WebhookTarget names a webhook without credentials, query or fragment.
func WebhookTarget(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "webhook (invalid URL)"
	}
	return "webhook " + u.Scheme + "://" + u.Host + u.EscapedPath()
}

// Bind stores incidents in the state directory dir from now on (and those
// raised before), names the repository in events, and calls audit (if
// set) once per new incident. Undelivered incidents an earlier process
// left are delivered again until they expire.
func (n *Notifier) Bind(dir, repoID string, audit func(Event)) error {
	st, err := OpenStore(dir)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.store, n.repoID, n.audit = st, repoID, audit
	pending := n.pending
	n.pending = nil
	n.mu.Unlock()
	var redeliver []Incident
	err = st.Update(func(in []Incident) ([]Incident, error) {
		for _, p := range pending {
			if p.RepoID == "" {
				p.RepoID = repoID
			}
			if i := findOpen(in, p.Key()); i >= 0 {
				in[i].Count += p.Count
				in[i].LastSeen = p.LastSeen
				continue
			}
			in = append(in, p)
		}
		now := n.o.Now()
		for i := range in {
			if !in[i].Open() {
				continue
			}
			n.mu.Lock()
			n.active[in[i].Key()] = in[i].ID
			n.mu.Unlock()
			if in[i].Type == TypeTest || now.Sub(in[i].DetectedAt) > n.o.Expire {
				continue
			}
			for _, d := range in[i].Deliveries {
				if !d.Delivered && !d.Expired && !inPending(pending, in[i].ID) {
					redeliver = append(redeliver, in[i])
					break
				}
			}
		}
		return in, nil
	})
	for _, p := range pending {
		if audit != nil {
			ev := p.Event
			if ev.RepoID == "" {
				ev.RepoID = repoID
			}
			n.callAudit(ev)
		}
	}
	for _, inc := range redeliver {
		n.deliverAll(inc.Event, undelivered(inc))
	}
	return err
}

func inPending(p []Incident, id string) bool {
	for _, i := range p {
		if i.ID == id {
			return true
		}
	}
	return false
}

func undelivered(inc Incident) map[string]bool {
	m := map[string]bool{}
	for _, d := range inc.Deliveries {
		if !d.Delivered && !d.Expired {
			m[d.Target] = true
		}
	}
	return m
}

func findOpen(in []Incident, key string) int {
	for i := range in {
		if in[i].Open() && in[i].Key() == key {
			return i
		}
	}
	return -1
}

// Raise records ev and delivers it, unless an open incident of the same
// (type, object) exists: then it only counts. It never blocks on delivery.
func (n *Notifier) Raise(ev Event) {
	now := n.o.Now().UTC()
	if ev.DetectedAt.IsZero() {
		ev.DetectedAt = now
	}
	if ev.Host == "" {
		ev.Host = n.o.Host
	}
	if ev.Severity == "" {
		ev.Severity = Critical
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	if ev.RepoID == "" {
		ev.RepoID = n.repoID
	}
	key := ev.Key()
	if _, ok := n.active[key]; ok {
		n.dups[key]++
		n.scheduleFlushLocked()
		n.mu.Unlock()
		return
	}
	ev.ID = newID()
	inc := Incident{Event: ev, LastSeen: ev.DetectedAt, Count: 1}
	for _, t := range n.Targets() {
		inc.Deliveries = append(inc.Deliveries, Delivery{Target: t})
	}
	n.active[key] = ev.ID
	st := n.store
	if st == nil {
		n.pending = append(n.pending, inc)
		n.mu.Unlock()
	} else {
		n.mu.Unlock()
		isNew := true
		err := st.Update(func(in []Incident) ([]Incident, error) {
			if i := findOpen(in, key); i >= 0 {
				// Opened by another process (or an earlier run) and not
				// acknowledged: count it; it was delivered then.
				in[i].Count++
				in[i].LastSeen = ev.DetectedAt
				isNew = false
				n.mu.Lock()
				n.active[key] = in[i].ID
				n.mu.Unlock()
				return in, nil
			}
			return append(in, inc), nil
		})
		if err != nil {
			n.log.Error("cannot record the incident", "err", err)
		}
		if !isNew {
			return
		}
	}
	n.log.Error("integrity event", "id", ev.ID, "type", ev.Type, "severity", ev.Severity,
		"object", ev.Object, "message", ev.Message)
	n.deliverAll(ev, nil)
	if st != nil {
		n.callAudit(ev)
	}
}

// callAudit hands a new incident to the audit hook, synchronously: the
// hook uses the repository handle, which the caller closes after the
// notifier's last Raise returns.
func (n *Notifier) callAudit(ev Event) {
	n.mu.Lock()
	a := n.audit
	n.mu.Unlock()
	if a != nil {
		a(ev)
	}
}

// scheduleFlushLocked writes suppressed counts within a second, and drops
// from active the incidents someone acknowledged meanwhile, so that the
// next event of their kind opens a new one.
func (n *Notifier) scheduleFlushLocked() {
	if n.flushT != nil || n.store == nil {
		return
	}
	n.flushT = time.AfterFunc(time.Second, func() { n.flush() })
}

func (n *Notifier) flush() {
	n.mu.Lock()
	n.flushT = nil
	dups := n.dups
	n.dups = map[string]int64{}
	st := n.store
	n.mu.Unlock()
	if st == nil {
		return
	}
	now := n.o.Now().UTC()
	err := st.Update(func(in []Incident) ([]Incident, error) {
		n.mu.Lock()
		defer n.mu.Unlock()
		changed := false
		for key, id := range n.active {
			found := false
			for i := range in {
				if in[i].ID == id && in[i].Open() {
					found = true
					if dups[key] > 0 {
						in[i].Count += dups[key]
						in[i].LastSeen = now
						changed = true
					}
				}
			}
			if !found {
				delete(n.active, key)
			}
		}
		if !changed {
			return nil, errUnchanged
		}
		return in, nil
	})
	if err != nil {
		n.log.Warn("cannot update incident counts", "err", err)
	}
}

// Refresh forgets incidents acknowledged since they were raised, so that
// their next event opens a new incident. The daemon calls it periodically.
func (n *Notifier) Refresh() { n.flush() }

// deliverAll starts the delivery of ev to every target (only those in
// only, if set).
func (n *Notifier) deliverAll(ev Event, only map[string]bool) {
	body, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if n.o.Exec != "" && (only == nil || only[ExecTarget(n.o.Exec)]) {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.deliverExec(ev, body) }()
	}
	if n.o.Webhook != "" && (only == nil || only[WebhookTarget(n.o.Webhook)]) {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.deliverWebhook(ev, body) }()
	}
}

// record notes one attempt's outcome in the incident.
func (n *Notifier) record(ev Event, target string, delivered, expired bool, answer string, err error) {
	lvl := slog.LevelInfo
	msg := "notification delivered"
	if !delivered {
		lvl, msg = slog.LevelWarn, "notification not delivered"
	}
	attrs := []any{"id", ev.ID, "target", target, "answer", answer}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	n.log.Log(context.Background(), lvl, msg, attrs...)
	n.mu.Lock()
	st := n.store
	n.mu.Unlock()
	if st == nil || ev.Type == TypeTest {
		return
	}
	_ = st.Update(func(in []Incident) ([]Incident, error) {
		for i := range in {
			if in[i].ID != ev.ID {
				continue
			}
			for j := range in[i].Deliveries {
				d := &in[i].Deliveries[j]
				if d.Target != target {
					continue
				}
				d.Attempts++
				d.LastAttempt = n.o.Now().UTC()
				d.Delivered, d.Expired, d.Answer = delivered, expired, answer
				d.LastError = ""
				if err != nil {
					d.LastError = err.Error()
				}
			}
		}
		return in, nil
	})
}

func (n *Notifier) deliverExec(ev Event, body []byte) {
	target := ExecTarget(n.o.Exec)
	delay := n.o.Backoff
	for attempt := 1; ; attempt++ {
		answer, err := n.runExec(n.ctx, body)
		last := err == nil || attempt >= n.o.ExecAttempts || n.ctx.Err() != nil
		n.record(ev, target, err == nil, err != nil && attempt >= n.o.ExecAttempts, answer, err)
		if last {
			return
		}
		if !n.sleep(delay) {
			return
		}
		delay *= 2
	}
}

func (n *Notifier) runExec(ctx context.Context, body []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, n.o.ExecTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", n.o.Exec)
	cmd.Stdin = bytes.NewReader(append(body, '\n'))
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	answer := "exit 0"
	if cmd.ProcessState != nil {
		answer = fmt.Sprintf("exit %d", cmd.ProcessState.ExitCode())
	}
	if line := firstLine(out.String()); line != "" {
		answer += ": " + line
	}
	if ctx.Err() == context.DeadlineExceeded {
		return answer, fmt.Errorf("timed out after %s", n.o.ExecTimeout)
	}
	if err != nil {
		return answer, errors.New("hook failed: " + answer)
	}
	return answer, nil
}

func (n *Notifier) deliverWebhook(ev Event, body []byte) {
	target := WebhookTarget(n.o.Webhook)
	delay := n.o.Backoff
	for {
		answer, err := n.post(n.ctx, body)
		expired := err != nil && n.o.Now().Sub(ev.DetectedAt) > n.o.Expire
		n.record(ev, target, err == nil, expired, answer, err)
		if err == nil || expired || n.ctx.Err() != nil {
			return
		}
		if !n.sleep(delay) {
			return
		}
		delay = min(delay*2, 5*time.Minute)
	}
}

func (n *Notifier) post(ctx context.Context, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.o.Webhook, bytes.NewReader(body))
	if err != nil {
		return "", errors.New("invalid webhook URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keepfs")
	if len(n.o.Secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(n.o.Secret, body))
	}
	resp, err := n.o.HTTPClient.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may carry a token: keep the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("POST failed: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	answer := "HTTP " + resp.Status
	if line := firstLine(string(b)); line != "" {
		answer += ": " + line
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answer, errors.New("webhook answered " + resp.Status)
	}
	return answer, nil
}

// sleep waits d unless the notifier is closing; false if it is.
func (n *Notifier) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-n.ctx.Done():
		return false
	}
}

// Close waits for deliveries in flight until ctx ends, then stops them
// (undelivered incidents stay in the store for the next process) and
// writes suppressed counts.
func (n *Notifier) Close(ctx context.Context) {
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		n.cancel()
		<-done
	}
	n.cancel()
	n.mu.Lock()
	n.closed = true
	if n.flushT != nil {
		n.flushT.Stop()
	}
	n.mu.Unlock()
	n.flush()
}

// TestResult is what one target answered to a test event.
type TestResult struct {
	Target    string `json:"target"`
	Delivered bool   `json:"delivered"`
	Answer    string `json:"answer,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Test sends one test event to each target, once, and says what each
// answered. It opens no incident.
func (n *Notifier) Test(ctx context.Context, repoID string) []TestResult {
	ev := Event{ID: newID(), Type: TypeTest, Severity: Info, Object: "notify test", DetectedAt: n.o.Now().UTC(),
		RepoID: repoID, Host: n.o.Host, Message: "keepfs notify test: this target receives keepfs integrity events"}
	body, _ := json.Marshal(ev)
	var out []TestResult
	if n.o.Exec != "" {
		answer, err := n.runExec(ctx, body)
		out = append(out, result(ExecTarget(n.o.Exec), answer, err))
	}
	if n.o.Webhook != "" {
		answer, err := n.post(ctx, body)
		out = append(out, result(WebhookTarget(n.o.Webhook), answer, err))
	}
	return out
}

func result(target, answer string, err error) TestResult {
	r := TestResult{Target: target, Delivered: err == nil, Answer: answer}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 4096 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
