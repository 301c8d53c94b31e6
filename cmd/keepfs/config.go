package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
)

// The config file holds named profiles, each a table of the long flags'
// names and values:
//
//	[profiles.work]
//	repo = "sftp://backup@nas:22/srv/keepfs/work"
//	password-file = "/home/u/.config/keepfs/work.pass"
//	mountpoint = "/home/u/safe"
//	cache-size = "4GiB"
//	snapshot-interval = "5m"
//
// --profile NAME (KEEPFS_PROFILE) picks one; nothing is read without it.
// A value applies only where the flag was not given on the command line or
// through its environment variable. `mountpoint` is what mount and unmount
// use when given no mount point; `password` is accepted only in a file
// nobody but its owner can read (mode 0600).

// configFile is the parsed file.
type configFile struct {
	Profiles map[string]map[string]any `toml:"profiles"`
}

// profile is the one chosen, as applied to this run.
type profile struct {
	name, file string
	values     map[string]any
	password   string
	// fromConfig names the flags whose values came from the profile.
	fromConfig map[string]bool
}

// profileKeys that are not flags.
var profileOnlyKeys = map[string]bool{"mountpoint": true, "password": true}

// defaultConfigPaths are tried in order when --config is not given.
func defaultConfigPaths() []string {
	var ps []string
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		ps = append(ps, filepath.Join(x, "keepfs", "config.toml"))
	} else if home, err := os.UserHomeDir(); err == nil {
		ps = append(ps, filepath.Join(home, ".config", "keepfs", "config.toml"))
	}
	return append(ps, "/etc/keepfs/config.toml")
}

// loadProfile reads the profile --profile names, if any. Every problem is
// one line naming the file.
func loadProfile(path, name string, explicit bool) (*profile, error) {
	if name == "" && !explicit {
		return nil, nil
	}
	if path == "" {
		for _, p := range defaultConfigPaths() {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
		if path == "" {
			return nil, usageError("profile %q: no config file (looked at %s)", name, strings.Join(defaultConfigPaths(), ", "))
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, usageError("config file %s does not exist", path)
		}
		return nil, fmt.Errorf("config file: %w", err)
	}
	var cf configFile
	md, err := toml.Decode(string(b), &cf)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, usageError("config file %s: line %d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, usageError("config file %s: %s", path, oneLine(err))
	}
	if und := md.Undecoded(); len(und) > 0 {
		// Top-level keys other than [profiles.*] are a typo, not a default.
		return nil, usageError("config file %s: unknown key %q (profiles go under [profiles.NAME])", path, und[0].String())
	}
	if name == "" {
		return nil, nil
	}
	vals, ok := cf.Profiles[name]
	if !ok {
		var names []string
		for n := range cf.Profiles {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, usageError("config file %s has no profile %q (it has: %s)", path, name, strings.Join(names, ", "))
	}
	p := &profile{name: name, file: path, values: vals, fromConfig: map[string]bool{}}
	if pw, ok := vals["password"]; ok {
		s, ok := pw.(string)
		if !ok || s == "" {
			return nil, usageError("config file %s: profile %q: password must be a non-empty string", path, name)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, usageError("config file %s holds a password but others can read it (mode %04o): chmod 600 %s, or use password-file or password-command", path, fi.Mode().Perm(), path)
		}
		if _, f := vals["password-file"]; f {
			return nil, usageError("config file %s: profile %q: give password or password-file, not both", path, name)
		}
		if _, f := vals["password-command"]; f {
			return nil, usageError("config file %s: profile %q: give password or password-command, not both", path, name)
		}
		p.password = s
	}
	return p, nil
}

// applyProfile sets every flag of fs that the profile names and the
// command line and environment did not.
func (p *profile) apply(c *cli.Context, flags []cli.Flag) error {
	if p == nil {
		return nil
	}
	for _, f := range flags {
		name := f.Names()[0]
		v, ok := p.values[name]
		if !ok || c.IsSet(name) || !settable(f) {
			continue
		}
		s, err := flagValue(f, v)
		if err == nil {
			err = c.Set(name, s)
		}
		if err != nil {
			return usageError("config file %s: profile %q: %s: %s", p.file, p.name, name, oneLine(err))
		}
		p.fromConfig[name] = true
	}
	return nil
}

// settable says whether a profile may set f: internal flags are not.
func settable(f cli.Flag) bool {
	v, ok := f.(cli.VisibleFlag)
	return !ok || v.IsVisible()
}

func flagValue(f cli.Flag, v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		if _, ok := f.(*cli.BoolFlag); !ok {
			return "", errors.New("takes a value, not true/false")
		}
		return fmt.Sprint(x), nil
	case int64:
		if _, ok := f.(*cli.DurationFlag); ok {
			return fmt.Sprintf("%ds", x), nil // a bare number of seconds
		}
		return fmt.Sprint(x), nil
	case float64:
		return fmt.Sprint(x), nil
	}
	return "", fmt.Errorf("unsupported value %v", v)
}

// unknownKeys lists the profile's keys that no flag of this build has.
func (p *profile) unknownKeys(app *cli.App) []string {
	known := map[string]bool{}
	add := func(fs []cli.Flag) {
		for _, f := range fs {
			if settable(f) {
				known[f.Names()[0]] = true
			}
		}
	}
	add(app.Flags)
	var walk func([]*cli.Command)
	walk = func(cs []*cli.Command) {
		for _, c := range cs {
			add(c.Flags)
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	var out []string
	for k := range p.values {
		if !known[k] && !profileOnlyKeys[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

const profileKey = "keepfs-profile"

// activeProfile is the profile this run applies, or nil.
func activeProfile(c *cli.Context) *profile {
	p, _ := c.App.Metadata[profileKey].(*profile)
	return p
}

// setupProfile runs before any command: it loads the profile and applies
// its global flags, warning once about keys this build does not know.
func setupProfile(c *cli.Context) error {
	p, err := loadProfile(c.String("config"), c.String("profile"), c.IsSet("config"))
	if err != nil || p == nil {
		return err
	}
	if c.App.Metadata == nil {
		c.App.Metadata = map[string]any{}
	}
	c.App.Metadata[profileKey] = p
	for _, k := range p.unknownKeys(c.App) {
		fmt.Fprintf(c.App.ErrWriter, "keepfs: warning: config file %s: profile %q: unknown key %q ignored\n", p.file, p.name, k)
	}
	return p.apply(c, c.App.Flags)
}

// applyProfileToCommands makes every command apply the profile's values
// for its own flags once they are parsed.
func applyProfileToCommands(cmds []*cli.Command) {
	for _, cmd := range cmds {
		flags := cmd.Flags
		prev := cmd.Before
		cmd.Before = func(c *cli.Context) error {
			if err := activeProfile(c).apply(c, flags); err != nil {
				return err
			}
			if prev != nil {
				return prev(c)
			}
			return nil
		}
		applyProfileToCommands(cmd.Subcommands)
	}
}

// profileMountpoint is the profile's mountpoint, for mount and unmount
// given none.
func profileMountpoint(c *cli.Context) string {
	p := activeProfile(c)
	if p == nil {
		return ""
	}
	s, _ := p.values["mountpoint"].(string)
	return s
}

// profilePassword is the profile's password unless the command line or
// environment named another source.
func profilePassword(c *cli.Context) string {
	p := activeProfile(c)
	if p == nil || p.password == "" {
		return ""
	}
	for _, f := range []string{"password-file", "password-command"} {
		if c.IsSet(f) && !p.fromConfig[f] {
			return ""
		}
	}
	return p.password
}
