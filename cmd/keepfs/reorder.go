package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// reorderArgs lets flags follow positional arguments, as GNU tools do.
// urfave/cli v2 stops parsing flags at the first positional argument and
// silently treats later flags as arguments; we move every flag of the
// command (and every global flag) before the positionals. "--" ends flags.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	global := flagArity(app.Flags)
	out := []string{args[0]}
	rest := args[1:]

	// Global flags before the command.
	var globals []string
	i := 0
	for i < len(rest) && strings.HasPrefix(rest[i], "-") && rest[i] != "-" && rest[i] != "--" {
		n := takes(global, rest[i])
		end := min(i+1+n, len(rest))
		globals = append(globals, rest[i:end]...)
		i = end
	}
	rest = rest[i:]
	if len(rest) == 0 {
		return append(out, globals...)
	}
	// The command path: names of commands and subcommands.
	var path []string
	cmds := app.Commands
	var cmd *cli.Command
	for len(rest) > 0 {
		c := findCommand(cmds, rest[0])
		if c == nil {
			break
		}
		cmd = c
		path = append(path, rest[0])
		rest = rest[1:]
		cmds = c.Subcommands
		// Subcommand names may be preceded by the parent's flags; keep it simple:
		// only descend while the next word names a subcommand.
		if len(cmds) == 0 {
			break
		}
	}
	if cmd == nil {
		return append(append(out, globals...), rest...)
	}
	local := flagArity(cmd.Flags)
	local["help"], local["h"] = 0, 0
	var flags, pos []string
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		if a == "--" {
			pos = append(pos, rest[j:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		if n, ok := lookup(local, a); ok {
			end := min(j+1+n, len(rest))
			flags = append(flags, rest[j:end]...)
			j = end - 1
			continue
		}
		if n, ok := lookup(global, a); ok {
			end := min(j+1+n, len(rest))
			globals = append(globals, rest[j:end]...)
			j = end - 1
			continue
		}
		flags = append(flags, a) // unknown: let the parser complain
	}
	out = append(out, globals...)
	out = append(out, path...)
	out = append(out, flags...)
	return append(out, pos...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
		for _, a := range c.Aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

// flagArity maps each flag name to the number of values it takes.
func flagArity(fs []cli.Flag) map[string]int {
	m := map[string]int{}
	for _, f := range fs {
		n := 1
		if _, ok := f.(*cli.BoolFlag); ok {
			n = 0
		}
		for _, name := range f.Names() {
			m[name] = n
		}
	}
	return m
}

func lookup(m map[string]int, arg string) (int, bool) {
	name := strings.TrimLeft(arg, "-")
	if k := strings.IndexByte(name, '='); k >= 0 {
		_, ok := m[name[:k]]
		return 0, ok
	}
	n, ok := m[name]
	return n, ok
}

func takes(m map[string]int, arg string) int {
	n, _ := lookup(m, arg)
	return n
}
