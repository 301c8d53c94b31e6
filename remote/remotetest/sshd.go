package remotetest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHD is a real OpenSSH server on loopback, private to one test: its own
// host key, one authorised client key, sftp enabled. Logging in as the
// user running the test needs no password.
type SSHD struct {
	Host string // always 127.0.0.1
	Port int
	User string // the user running the test
	// KnownHosts is a known_hosts file that names this server's key.
	KnownHosts string
	// Identity is an unencrypted OpenSSH private key the server accepts.
	Identity string
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey

	t      testing.TB
	dir    string
	binary string
	config string
	mu     sync.Mutex
	cmd    *exec.Cmd     // guarded by mu; nil when stopped
	exited chan struct{} // guarded by mu; closed when cmd has been reaped
	stderr *syncBuffer
}

// RequireSSHDEnv names the variable that turns a missing sshd from a
// skipped test into a failed one; CI sets it (as does a non-empty CI).
const RequireSSHDEnv = "KEEPFS_REQUIRE_SSHD"

// StartSSHD starts sshd for t and stops it, with every session it forked,
// when t ends. Without an sshd binary the test is skipped, or fails when
// KEEPFS_REQUIRE_SSHD=1 or CI is set, so CI can never silently skip.
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	binary, err := findSSHD()
	if err != nil {
		if os.Getenv(RequireSSHDEnv) == "1" || os.Getenv("CI") != "" {
			t.Fatalf("sshd is required (%s=1 or CI set) but unusable: %v; install openssh-server", RequireSSHDEnv, err)
		}
		t.Skipf("no sshd to test against (%v); install openssh-server, or set %s=1 to make this a failure", err, RequireSSHDEnv)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("sshd: current user: %v", err)
	}
	// sshd refuses to start without its privilege separation directory,
	// which a fresh container may lack.
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshd: create /run/sshd: %v", err)
		}
	}
	s := &SSHD{Host: "127.0.0.1", User: u.Username, t: t, dir: t.TempDir(), binary: binary, stderr: &syncBuffer{}}
	hostPub := s.writeKey("host_ed25519")
	clientPub := s.writeKey("id_ed25519")
	s.HostKey = hostPub
	s.Identity = filepath.Join(s.dir, "id_ed25519")
	if err := os.WriteFile(filepath.Join(s.dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatalf("sshd: %v", err)
	}

	// The port is picked by binding :0 and releasing it; another process
	// may grab it in between, so a failed start is retried on a new port.
	for attempt := 0; ; attempt++ {
		s.Port = freePort(t)
		s.writeConfig()
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 4 {
			t.Fatalf("sshd: %v", err)
		}
	}
	s.KnownHosts = filepath.Join(s.dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, hostPub) + "\n"
	if err := os.WriteFile(s.KnownHosts, []byte(line), 0o600); err != nil {
		t.Fatalf("sshd: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func findSSHD() (string, error) {
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("sshd")
	if err != nil {
		return "", fmt.Errorf("sshd not found in /usr/sbin, /usr/local/sbin or PATH: %w", err)
	}
	// sshd re-executes itself and insists on an absolute path.
	return filepath.Abs(p)
}

// Addr is host:port.
func (s *SSHD) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// URL returns the sftp:// URL of path on this server.
func (s *SSHD) URL(path string) string {
	return "sftp://" + s.User + "@" + s.Addr() + path
}

// KnownHostsLine is the known_hosts line naming this server's key.
func (s *SSHD) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, s.HostKey)
}

func (s *SSHD) writeKey(name string) ssh.PublicKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatalf("sshd: generate key: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "keepfs test key")
	if err != nil {
		s.t.Fatalf("sshd: marshal key: %v", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
		s.t.Fatalf("sshd: %v", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		s.t.Fatalf("sshd: %v", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, name+".pub"), ssh.MarshalAuthorizedKey(sshPub), 0o600); err != nil {
		s.t.Fatalf("sshd: %v", err)
	}
	return sshPub
}

func (s *SSHD) writeConfig() {
	s.config = filepath.Join(s.dir, "sshd_config")
	cfg := strings.Join([]string{
		"ListenAddress " + s.Addr(),
		"HostKey " + filepath.Join(s.dir, "host_ed25519"),
		"AuthorizedKeysFile " + filepath.Join(s.dir, "authorized_keys"),
		"PidFile " + filepath.Join(s.dir, "sshd.pid"),
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"UsePAM no",
		"StrictModes no",
		"Subsystem sftp internal-sftp",
		"LogLevel ERROR",
		// Tests open many connections at once.
		"MaxStartups 100",
		"MaxSessions 100",
		"",
	}, "\n")
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		s.t.Fatalf("sshd: %v", err)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sshd: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start restarts a stopped server on the same port with the same keys, to
// test reconnection.
func (s *SSHD) Start() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("sshd: restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *SSHD) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	cmd := exec.Command(s.binary, "-D", "-e", "-f", s.config)
	cmd.Stderr = s.stderr
	cmd.Stdout = s.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.binary, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("sshd exited at start: %s", strings.TrimSpace(s.stderr.String()))
		default:
		}
		if ready(s.Addr()) {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("sshd did not listen on %s within 10s: %s", s.Addr(), strings.TrimSpace(s.stderr.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ready reports whether an SSH server answers on addr with its banner.
func ready(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4)
	n, _ := c.Read(buf)
	return n == 4 && string(buf) == "SSH-"
}

// Stop kills the server and every session process it forked, so that open
// connections drop as if the machine went away. It is safe to call twice.
func (s *SSHD) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	// Sessions run in children that call setsid(), so killing the
	// listener or its process group would leave them serving.
	pids := append(descendants(s.cmd.Process.Pid), s.cmd.Process.Pid)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-s.exited
	s.cmd, s.exited = nil, nil
}

// Freeze stops (SIGSTOP) the server and its sessions without closing any
// connection: the client sees a peer that accepted its packets and then
// went silent, like a network partition. Thaw undoes it; Stop also works
// on a frozen server.
func (s *SSHD) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (s *SSHD) Thaw() { s.signal(syscall.SIGCONT) }

func (s *SSHD) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	for _, pid := range append(descendants(s.cmd.Process.Pid), s.cmd.Process.Pid) {
		_ = syscall.Kill(pid, sig)
	}
}

// Log returns what sshd wrote to stderr, for failure messages.
func (s *SSHD) Log() string { return s.stderr.String() }

// descendants lists every process below pid, from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := make(map[int][]int)
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name in parentheses may hold spaces; fields after
		// the last ')' are state, ppid, ...
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, err := strconv.Atoi(fields[1])
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
