package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// passphrase returns the passphrase from, in order: KEEPFS_PASSWORD,
// --password-file, --password-command, or a prompt on the terminal. Never
// from argv, so it does not show up in ps or shell history.
func passphrase(c *cli.Context, confirm bool) ([]byte, error) {
	if fd := c.Int("passphrase-fd"); fd > 0 {
		// A parent `keepfs mount` hands the daemon its passphrase this way.
		f := os.NewFile(uintptr(fd), "passphrase")
		b, err := io.ReadAll(io.LimitReader(f, 64<<10))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read passphrase pipe: %w", err)
		}
		return firstLine(b, "passphrase pipe")
	}
	if p, ok := os.LookupEnv("KEEPFS_PASSWORD"); ok && p != "" {
		return []byte(p), nil
	}
	if p := profilePassword(c); p != "" {
		return []byte(p), nil
	}
	if f := c.String("password-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read password file: %w", err)
		}
		return firstLine(b, "password file "+f)
	}
	if cmd := c.String("password-command"); cmd != "" {
		return runPasswordCommand(c.Context, cmd)
	}
	return promptPassphrase("Passphrase: ", confirm)
}

func firstLine(b []byte, what string) ([]byte, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, fmt.Errorf("%s is empty", what)
	}
	return line, nil
}

func runPasswordCommand(ctx context.Context, cmd string) ([]byte, error) {
	var out bytes.Buffer
	x := exec.CommandContext(ctx, "sh", "-c", cmd)
	x.Stdout = &out
	x.Stderr = os.Stderr
	if err := x.Run(); err != nil {
		return nil, fmt.Errorf("password command failed: %w", err)
	}
	return firstLine(out.Bytes(), "output of the password command")
}

// newPassphrase is for key add/passwd: KEEPFS_NEW_PASSWORD,
// --new-password-file, or a prompt with confirmation.
func newPassphrase(c *cli.Context) ([]byte, error) {
	if p, ok := os.LookupEnv("KEEPFS_NEW_PASSWORD"); ok && p != "" {
		return []byte(p), nil
	}
	if f := c.String("new-password-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read new password file: %w", err)
		}
		return firstLine(b, "new password file "+f)
	}
	return promptPassphrase("New passphrase: ", true)
}

var errNoPassphrase = errors.New("no passphrase: set KEEPFS_PASSWORD, --password-file or --password-command, or run on a terminal")

func promptPassphrase(prompt string, confirm bool) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, errNoPassphrase
	}
	defer tty.Close()
	if !term.IsTerminal(int(tty.Fd())) {
		return nil, errNoPassphrase
	}
	read := func(p string) ([]byte, error) {
		fmt.Fprint(tty, p)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		if err != nil {
			return nil, fmt.Errorf("read passphrase: %w", err)
		}
		return b, nil
	}
	p, err := read(prompt)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, errors.New("empty passphrase")
	}
	if confirm {
		again, err := read("Repeat " + strings.ToLower(prompt[:1]) + prompt[1:])
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(p, again) {
			return nil, errors.New("passphrases do not match")
		}
	}
	return p, nil
}
