package sftp

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func currentUser() (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("sftp: no user given and the current user is unknown: %w", err)
	}
	return u.Username, nil
}

func sshDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".ssh")
}

func defaultIdentities() []string {
	dir := sshDir()
	if dir == "" {
		return nil
	}
	return []string{filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "id_ecdsa"), filepath.Join(dir, "id_rsa")}
}

func (b *Backend) identityCandidates() []string {
	if len(b.cfg.IdentityFiles) > 0 {
		return b.cfg.IdentityFiles
	}
	return defaultIdentities()
}

// loadIdentities parses the private keys to offer. Explicitly named files
// must exist; default ones are used when present. Encrypted keys are
// skipped: a library cannot prompt, and ssh-agent is the place for them.
func loadIdentities(files []string, log *slog.Logger) ([]ssh.Signer, error) {
	explicit := len(files) > 0
	if !explicit {
		files = defaultIdentities()
	}
	var signers []ssh.Signer
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sftp: read identity file: %w", err)
		}
		s, err := ssh.ParsePrivateKey(pem)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			log.Warn("skipping passphrase-protected identity file; add it to ssh-agent to use it", "file", f)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sftp: identity file %s: %w", f, err)
		}
		signers = append(signers, s)
	}
	return signers, nil
}

// agentSigners returns the keys of the agent at SSH_AUTH_SOCK, if any, and
// the agent connection, which must stay open until authentication is done.
func agentSigners(log *slog.Logger) (net.Conn, []ssh.Signer) {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, nil
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		log.Debug("ssh-agent unreachable, using identity files only", "err", err)
		return nil, nil
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		log.Debug("ssh-agent listing failed, using identity files only", "err", err)
		conn.Close()
		return nil, nil
	}
	return conn, signers
}

// hostKeyCallback checks the server against known_hosts, turning a refusal
// into a one-line error that says what to do. It also returns the host key
// algorithms known_hosts holds for addr, so that the server is asked for a
// key we can check rather than whichever it prefers.
func hostKeyCallback(cfg Config, addr string) (ssh.HostKeyCallback, []string, error) {
	if cfg.InsecureIgnoreHostKey {
		return ssh.InsecureIgnoreHostKey(), nil, nil
	}
	file := cfg.KnownHostsFile
	if file == "" {
		dir := sshDir()
		if dir == "" {
			return nil, nil, errors.New("sftp: no home directory to find known_hosts in; pass a known_hosts file")
		}
		file = filepath.Join(dir, "known_hosts")
	}
	var files []string
	if _, err := os.Stat(file); err == nil {
		files = append(files, file)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("sftp: known_hosts: %w", err)
	}
	// A missing file is an empty one: every host is then unknown, and the
	// error below says how to add it.
	db, err := knownhosts.NewDB(files...)
	if err != nil {
		return nil, nil, fmt.Errorf("sftp: known_hosts %s: %w", file, err)
	}
	check := db.HostKeyCallback()
	cb := func(hostname string, remoteAddr net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remoteAddr, key)
		switch {
		case err == nil:
			return nil
		case knownhosts.IsHostUnknown(err):
			return &refused{kind: ErrHostKey, msg: fmt.Sprintf(
				"sftp %s: unknown host key %s %s (not in %s); if that fingerprint is the server's, add it with: ssh-keyscan -p %s %s >> %s (or pass --insecure-ignore-host-key)",
				addr, key.Type(), ssh.FingerprintSHA256(key), file, portOf(addr), cfg.Host, file)}
		case knownhosts.IsHostKeyChanged(err):
			return &refused{kind: ErrHostKey, msg: fmt.Sprintf(
				"sftp %s: host key %s %s does not match %s: someone may be intercepting the connection; if the server's key really changed, remove the old entry with: ssh-keygen -R %q -f %s",
				addr, key.Type(), ssh.FingerprintSHA256(key), file, knownhosts.Normalize(addr), file)}
		}
		return &refused{kind: ErrHostKey, msg: fmt.Sprintf("sftp %s: host key check: %v", addr, err)}
	}
	return cb, db.HostKeyAlgorithms(addr), nil
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return strconv.Itoa(22)
	}
	return port
}
