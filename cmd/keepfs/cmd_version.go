package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// version and revision may be set at link time (the Makefile does:
// -X main.version=$(git describe) -X main.revision=$(git rev-parse HEAD));
// otherwise they come from the module's build information.
var (
	version  = ""
	revision = ""
)

// fuseProtocol is the FUSE kernel protocol go-fuse speaks on Linux
// (fuse/request_linux.go: major 7, _OUR_MINOR_VERSION 28); the kernel may
// negotiate a lower minor version at mount time.
const fuseProtocol = "7.28"

func init() {
	// -v is --verbose; --version has no short form.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version and exit", DisableDefaultText: true}
	cli.VersionPrinter = func(c *cli.Context) { printVersion(c.App.Writer) }
}

// buildVersion describes this binary.
type buildVersion struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
	FUSE      string `json:"fuse_protocol"`
	GoFUSE    string `json:"go_fuse,omitempty"`
}

func currentVersion() buildVersion {
	v := buildVersion{Version: version, Revision: revision, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, FUSE: fuseProtocol}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Revision == "" {
					v.Revision = s.Value
				}
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/hanwen/go-fuse/v2" {
				v.GoFUSE = d.Version
			}
		}
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	return v
}

func printVersion(w io.Writer) {
	v := currentVersion()
	rev := v.Revision
	if rev == "" {
		rev = "unknown"
	}
	if v.Modified {
		rev += " (modified)"
	}
	fmt.Fprintf(w, "keepfs %s\nrevision: %s\ngo: %s %s\nfuse protocol: %s", v.Version, rev, v.GoVersion, v.Platform, v.FUSE)
	if v.GoFUSE != "" {
		fmt.Fprintf(w, " (go-fuse %s)", v.GoFUSE)
	}
	fmt.Fprintln(w)
}

func cmdVersion() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, revision, Go version and FUSE protocol",
		Description: `Prints what this binary is: its version (module version, or the git
description it was built from), the VCS revision, the Go toolchain and the
FUSE protocol version the mount speaks. 'keepfs --version' prints the same.

Examples:
   keepfs version
   keepfs version --json`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("version takes no arguments")
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, currentVersion())
			}
			printVersion(c.App.Writer)
			return nil
		},
	}
}
