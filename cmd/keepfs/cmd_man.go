package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/urfave/cli/v2"
)

// cmdMan writes the man pages (hidden: 'make man' runs it). keepfs.1
// describes the program and its global options, keepfs-CMD.1 each command
// and keepfs-CMD-SUB.1 each subcommand, all generated from the command
// definitions, so they say exactly what --help says.
func cmdMan() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "write the man pages into a directory",
		Hidden: true,
		Description: `Examples:
   keepfs man --dir docs/man`,
		Flags: []cli.Flag{&cli.StringFlag{Name: "dir", Value: ".", Usage: "write the pages into `DIR`"}},
		Action: func(c *cli.Context) error {
			pages, err := manPages(newApp(nil, nil, nil))
			if err != nil {
				return err
			}
			dir := c.String("dir")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			for name, page := range pages {
				if err := os.WriteFile(filepath.Join(dir, name), page, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// manPages renders every page: file name → roff.
func manPages(app *cli.App) (map[string][]byte, error) {
	pages := map[string][]byte{}
	var see []string
	var walk func(prefix []string, cmds []*cli.Command)
	walk = func(prefix []string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			path := append(append([]string(nil), prefix...), c.Name)
			see = append(see, "keepfs-"+strings.Join(path, "-"))
			pages["keepfs-"+strings.Join(path, "-")+".1"] = []byte(commandMarkdown(path, c))
			walk(path, c.Subcommands)
		}
	}
	walk(nil, app.Commands)
	sort.Strings(see)
	pages["keepfs.1"] = []byte(appMarkdown(app, see))
	for name, md := range pages {
		pages[name] = md2man.Render(md)
	}
	return pages, nil
}

func appMarkdown(app *cli.App, see []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%% KEEPFS 1 \"\" \"keepfs\" \"User Commands\"\n\n# NAME\n\nkeepfs - %s\n\n", mdEscape(app.Usage))
	b.WriteString("# SYNOPSIS\n\n**keepfs** [*global options*] *command* [*options*] [*arguments*...]\n\n")
	b.WriteString("# DESCRIPTION\n\n" + mdText(app.Description) + "\n")
	b.WriteString("# GLOBAL OPTIONS\n\n" + mdFlags(app.Flags))
	b.WriteString("# COMMANDS\n\n")
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		fmt.Fprintf(&b, "**%s**\n: %s (see **keepfs-%s**(1))\n\n", c.Name, mdEscape(c.Usage), c.Name)
	}
	b.WriteString(mdSeeAlso(see))
	return b.String()
}

func commandMarkdown(path []string, c *cli.Command) string {
	var b strings.Builder
	name := "keepfs-" + strings.Join(path, "-")
	fmt.Fprintf(&b, "%% %s 1 \"\" \"keepfs\" \"User Commands\"\n\n# NAME\n\n%s - %s\n\n", strings.ToUpper(name), mdEscape(name), mdEscape(c.Usage))
	fmt.Fprintf(&b, "# SYNOPSIS\n\n**keepfs** [*global options*] **%s**", strings.Join(path, " "))
	if len(c.Subcommands) > 0 {
		b.WriteString(" *command*")
	}
	if visibleFlags(c.Flags) > 0 {
		b.WriteString(" [*options*]")
	}
	if c.ArgsUsage != "" {
		b.WriteString(" " + mdEscape(c.ArgsUsage))
	}
	b.WriteString("\n\n")
	if d := c.Description; d != "" {
		b.WriteString("# DESCRIPTION\n\n" + mdText(d) + "\n")
	}
	if visibleFlags(c.Flags) > 0 {
		b.WriteString("# OPTIONS\n\n" + mdFlags(c.Flags))
	}
	if len(c.Subcommands) > 0 {
		b.WriteString("# COMMANDS\n\n")
		for _, s := range c.Subcommands {
			if !s.Hidden {
				fmt.Fprintf(&b, "**%s**\n: %s (see **%s-%s**(1))\n\n", s.Name, mdEscape(s.Usage), name, s.Name)
			}
		}
	}
	b.WriteString(mdSeeAlso([]string{"keepfs"}))
	return b.String()
}

func visibleFlags(fs []cli.Flag) int {
	n := 0
	for _, f := range fs {
		if v, ok := f.(cli.VisibleFlag); !ok || v.IsVisible() {
			n++
		}
	}
	return n
}

func mdFlags(fs []cli.Flag) string {
	var b strings.Builder
	for _, f := range fs {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		d, ok := f.(cli.DocGenerationFlag)
		if !ok {
			continue
		}
		placeholder, usage := unquoteUsage(d.GetUsage())
		if d.TakesValue() && placeholder == "" {
			placeholder = "value"
		}
		var names []string
		for _, n := range f.Names() {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			names = append(names, "**"+dash+mdEscape(n)+"**")
		}
		head := strings.Join(names, ", ")
		if d.TakesValue() {
			head += " *" + mdEscape(placeholder) + "*"
		}
		text := mdEscape(usage)
		if def := d.GetDefaultText(); def != "" && d.TakesValue() {
			text += " (default: " + mdEscape(def) + ")"
		}
		if env := d.GetEnvVars(); len(env) > 0 {
			text += " [$" + mdEscape(strings.Join(env, ", $")) + "]"
		}
		fmt.Fprintf(&b, "%s\n: %s\n\n", head, text)
	}
	return b.String()
}

func mdSeeAlso(names []string) string {
	var refs []string
	for _, n := range names {
		refs = append(refs, "**"+mdEscape(n)+"**(1)")
	}
	return "# SEE ALSO\n\n" + strings.Join(refs, ", ") + "\n"
}

// mdText turns a help description into markdown: lines indented by three
// spaces (the examples) become code blocks, the rest stays paragraphs.
func mdText(s string) string {
	var b strings.Builder
	code := false
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(l, "   ") {
			if !code {
				b.WriteString("\n") // a code block starts after a blank line
			}
			code = true
			b.WriteString("    " + strings.TrimPrefix(l, "   ") + "\n")
			continue
		}
		if code && strings.TrimSpace(l) != "" {
			b.WriteString("\n")
		}
		code = false
		b.WriteString(mdEscape(l) + "\n")
	}
	return b.String() + "\n"
}

func mdEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("\\`*_{}[]#+!<>|~", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// unquoteUsage splits a flag's usage into its `PLACEHOLDER` and the text,
// as urfave/cli's help does.
func unquoteUsage(usage string) (string, string) {
	i := strings.IndexByte(usage, '`')
	if i < 0 {
		return "", usage
	}
	j := strings.IndexByte(usage[i+1:], '`')
	if j < 0 {
		return "", usage
	}
	name := usage[i+1 : i+1+j]
	return name, usage[:i] + name + usage[i+2+j:]
}
