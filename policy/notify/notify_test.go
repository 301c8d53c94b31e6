package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// receiver is a webhook endpoint that verifies signatures and records
// what arrived.
type receiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	got    []Event
	bad    int
	fail   int // answer 503 to this many requests first
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secret != nil && req.Header.Get(SignatureHeader) != Sign(r.secret, body) {
		r.bad++
		http.Error(w, "bad signature", http.StatusForbidden)
		return
	}
	if r.fail > 0 {
		r.fail--
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("webhook body: %v", err)
	}
	r.got = append(r.got, ev)
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.got...)
}

func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
	}
}

func TestNotifyDeliversSignedWebhookAndExec(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("s3cret-hmac-key")
	rcv := &receiver{t: t, secret: secret, fail: 2}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	hookOut := filepath.Join(dir, "hook.out")
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	n := New(Options{
		Exec:    "cat >> " + hookOut,
		Webhook: srv.URL + "/hook?token=url-token-XYZ",
		Secret:  secret, Backoff: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logBuf, mu: &logMu}, nil)),
	})
	var audited []Event
	var amu sync.Mutex
	if err := n.Bind(dir, "repo1", func(e Event) { amu.Lock(); audited = append(audited, e); amu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n.Raise(Event{Type: TypeTampered, Object: "packs/ab", Message: "pack packs/ab failed authentication"})
	waitFor(t, "webhook delivery after two 503s", 5*time.Second, func() bool { return len(rcv.events()) == 1 })
	waitFor(t, "exec delivery", 5*time.Second, func() bool { b, _ := os.ReadFile(hookOut); return len(b) > 0 })
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("delivery took %s", took)
	}
	ev := rcv.events()[0]
	if ev.Type != TypeTampered || ev.Object != "packs/ab" || ev.RepoID != "repo1" || ev.Host == "" || ev.ID == "" || ev.DetectedAt.IsZero() || ev.Severity != Critical {
		t.Fatalf("event: %+v", ev)
	}
	b, _ := os.ReadFile(hookOut)
	var hev Event
	if err := json.Unmarshal(bytes.TrimSpace(b), &hev); err != nil || hev.ID != ev.ID {
		t.Fatalf("hook stdin %q: %v", b, err)
	}
	n.Close(context.Background())
	amu.Lock()
	if len(audited) != 1 || audited[0].ID != ev.ID {
		t.Errorf("audited %+v", audited)
	}
	amu.Unlock()
	st, _ := OpenStore(dir)
	open, err := st.OpenIncidents()
	if err != nil || len(open) != 1 {
		t.Fatalf("open incidents %+v %v", open, err)
	}
	for _, d := range open[0].Deliveries {
		if !d.Delivered {
			t.Errorf("delivery %+v", d)
		}
		if d.Target == "webhook" || strings.Contains(d.Target, "token") {
			t.Errorf("target %q", d.Target)
		}
	}
	// Secrets never appear in the log, the store or the events.
	inc, _ := os.ReadFile(filepath.Join(dir, StoreFile))
	logMu.Lock()
	all := logBuf.String() + string(inc) + string(b)
	logMu.Unlock()
	for _, s := range []string{"s3cret-hmac-key", "url-token-XYZ"} {
		if strings.Contains(all, s) {
			t.Errorf("secret %q leaked:\n%s", s, all)
		}
	}
	if rcv.bad != 0 {
		t.Errorf("%d requests with a bad signature", rcv.bad)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestNotifyDuplicateSuppression(t *testing.T) {
	dir := t.TempDir()
	rcv := &receiver{t: t}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := New(Options{Webhook: srv.URL})
	if err := n.Bind(dir, "r", nil); err != nil {
		t.Fatal(err)
	}
	for range 10000 {
		n.Raise(Event{Type: TypeTampered, Object: "packs/cd"})
	}
	n.Raise(Event{Type: TypeMissing, Object: "packs/cd"})
	n.Close(context.Background())
	if got := rcv.events(); len(got) != 2 {
		t.Fatalf("%d deliveries, want 2", len(got))
	}
	st, _ := OpenStore(dir)
	open, _ := st.OpenIncidents()
	if len(open) != 2 || open[0].Count != 10000 || open[1].Count != 1 {
		t.Fatalf("incidents: %+v", open)
	}

	// Another process (a later run) counts into the open incident without
	// delivering again; after an ack the next event opens a new one.
	n2 := New(Options{Webhook: srv.URL})
	if err := n2.Bind(dir, "r", nil); err != nil {
		t.Fatal(err)
	}
	n2.Raise(Event{Type: TypeTampered, Object: "packs/cd"})
	if ids, err := st.Ack(open[0].ID[:6], time.Now()); err != nil || len(ids) != 1 {
		t.Fatalf("ack: %v %v", ids, err)
	}
	n2.Refresh()
	n2.Raise(Event{Type: TypeTampered, Object: "packs/cd"})
	n2.Close(context.Background())
	if got := rcv.events(); len(got) != 3 {
		t.Fatalf("%d deliveries after ack, want 3", len(got))
	}
	open, _ = st.OpenIncidents()
	if len(open) != 2 || open[1].Type != TypeTampered || open[1].ID == rcv.events()[0].ID {
		t.Fatalf("after ack: %+v", open)
	}
}

func TestNotifyRedeliversAfterRestart(t *testing.T) {
	dir := t.TempDir()
	// The endpoint fails while the first process tries.
	rcv := &receiver{t: t, fail: 1 << 30}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	url := srv.URL + "/x"
	n := New(Options{Webhook: url, Backoff: 10 * time.Millisecond})
	if err := n.Bind(dir, "r", nil); err != nil {
		t.Fatal(err)
	}
	n.Raise(Event{Type: TypeRollback, Object: "snapshots/"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	n.Close(ctx)
	cancel()
	st, _ := OpenStore(dir)
	open, _ := st.OpenIncidents()
	if len(open) != 1 || open[0].Deliveries[0].Delivered || open[0].Deliveries[0].LastError == "" {
		t.Fatalf("undelivered incident: %+v", open)
	}
	rcv.mu.Lock()
	rcv.fail = 0
	rcv.mu.Unlock()
	n2 := New(Options{Webhook: url})
	if err := n2.Bind(dir, "r", nil); err != nil {
		t.Fatal(err)
	}
	n2.Close(context.Background())
	if got := rcv.events(); len(got) != 1 || got[0].ID != open[0].ID {
		t.Fatalf("redelivered: %+v", got)
	}
}

func TestNotifyTestReportsAnswers(t *testing.T) {
	rcv := &receiver{t: t, secret: []byte("k")}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := New(Options{Exec: "echo hello from hook; exit 3", Webhook: srv.URL, Secret: []byte("k"), ExecTimeout: 5 * time.Second})
	res := n.Test(context.Background(), "r")
	if len(res) != 2 || res[0].Delivered || !strings.Contains(res[0].Answer, "exit 3: hello from hook") ||
		!res[1].Delivered || !strings.Contains(res[1].Answer, "204") {
		t.Fatalf("%+v", res)
	}
	if ev := rcv.events(); len(ev) != 1 || ev[0].Type != TypeTest {
		t.Fatalf("%+v", ev)
	}
	slow := New(Options{Exec: "sleep 5", ExecTimeout: 200 * time.Millisecond})
	start := time.Now()
	if r := slow.Test(context.Background(), "r"); r[0].Delivered || !strings.Contains(r[0].Error, "timed out") || time.Since(start) > 3*time.Second {
		t.Fatalf("slow hook: %+v after %s", r, time.Since(start))
	}
}
