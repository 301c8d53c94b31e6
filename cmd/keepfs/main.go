// Command keepfs is the control CLI and mount daemon of keepfs.
//
// This package is wiring only: flags, prompts and output formats. Every
// command lives in its own cmd_*.go file and returns an error; main maps
// errors to exit codes (0 ok, 1 failure, 2 usage, 3 integrity problem).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Exit codes, as DESIGN.md defines them.
const (
	exitOK        = 0
	exitFailure   = 1
	exitUsage     = 2
	exitIntegrity = 3
)

// exitError carries an exit code through urfave/cli.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

func integrityError(format string, args ...any) error {
	return &exitError{exitIntegrity, fmt.Errorf(format, args...)}
}

func main() {
	if os.Getenv("GOGC") == "" {
		// The heap is mostly a few large, pooled buffers (packs, chunker
		// windows): collecting early costs little CPU and keeps peak RSS
		// near the live size.
		debug.SetGCPercent(25)
	}
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp(stdin, stdout, stderr)
	if isMountHelperCall(app, args) {
		return runMountHelper(args, func(a []string) int { return run(a, stdin, stdout, stderr) },
			func(s string) { fmt.Fprint(stderr, s) })
	}
	err := app.RunContext(ctx, reorderForRun(app, args))
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case isUsage(err):
		code = exitUsage
	case errors.Is(err, context.Canceled):
		err = errors.New("interrupted")
	}
	msg := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	fmt.Fprintf(stderr, "keepfs: %s\n", msg)
	if code == exitUsage {
		fmt.Fprintln(stderr, "Run 'keepfs --help' or 'keepfs COMMAND --help' for usage.")
	}
	return code
}

// reorderForRun is reorderArgs, except that a shell's completion request
// (--generate-bash-completion, which urfave/cli wants last) stays last.
func reorderForRun(app *cli.App, args []string) []string {
	const complete = "--generate-bash-completion"
	if n := len(args); n > 1 && args[n-1] == complete {
		return append(reorderArgs(app, args[:n-1]), complete)
	}
	return reorderArgs(app, args)
}

// isUsage recognises the flag package's parse errors, which urfave/cli
// returns unwrapped.
func isUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"flag provided but not defined", "flag needs an argument", "invalid value", "Required flag", "No help topic", "invalid boolean"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func setupLogging(c *cli.Context) {
	level := slog.LevelWarn
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level})))
}
