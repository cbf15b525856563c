package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// commandLine matches a line of a code block that runs interceptd.
var commandLine = regexp.MustCompile(`^\s*(?:sudo\s+)?(?:\./|/\S*/)?interceptd\s+(.*)$`)

// described is a synopsis line: a command, then its description in a
// column (a command line's comment starts with #).
var described = regexp.MustCompile(`\S {3,}[^ #]`)

// shellWords splits a command line as sh would, as far as the docs need:
// quotes, and the end of the command at a comment, pipe, redirection or
// list operator. ok is false for lines it cannot judge (expansions).
func shellWords(line string) (words []string, ok bool) {
	if strings.ContainsAny(line, "$`<") {
		return nil, false
	}
	var w strings.Builder
	inWord := false
	var quote rune
	end := func() {
		if inWord {
			words, inWord = append(words, w.String()), false
			w.Reset()
		}
	}
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			end()
		case r == '#' && !inWord, strings.ContainsRune("|>;&", r):
			end()
			return words, true
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	end()
	return words, quote == 0
}

// parses reports whether args name a command and flags it takes, with
// arguments it accepts, without running it.
func parses(args []string) error {
	root := newRoot()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return err
	}
	if err := root.PersistentPreRunE(cmd, nil); err != nil {
		return err
	}
	if h, _ := cmd.Flags().GetBool("help"); h {
		return nil
	}
	return cmd.ValidateArgs(cmd.Flags().Args())
}

func TestEveryDocumentedCommandLineParses(t *testing.T) {
	type example struct{ where, line string }
	var examples []example
	// The commands' own examples...
	walk(newRoot(), func(c *cobra.Command) {
		for _, l := range strings.Split(c.Example, "\n") {
			examples = append(examples, example{c.CommandPath() + " example", l})
		}
	})
	// ...and the code blocks of the README and the docs.
	files, _ := filepath.Glob("../../docs/*.md")
	for _, f := range append(files, "../../README.md") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inCode := false
		for i, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "```") {
				inCode = !inCode
				continue
			}
			if inCode {
				examples = append(examples, example{filepath.Base(f) + ":" + strconv.Itoa(i+1), l})
			}
		}
	}
	checked := 0
	for _, ex := range examples {
		m := commandLine.FindStringSubmatch(ex.line)
		if m == nil {
			continue
		}
		// Synopses ([--flag], A|B, ...) are not command lines.
		if described.MatchString(m[1]) || strings.ContainsAny(m[1], "[") || strings.Contains(m[1], "...") || strings.Contains(m[1], "|") && !strings.Contains(m[1], " | ") {
			continue
		}
		args, ok := shellWords(m[1])
		if !ok || len(args) == 0 {
			continue
		}
		if args[0] == "COMMAND" || strings.ToUpper(args[len(args)-1]) == args[len(args)-1] && len(args[len(args)-1]) > 1 && !strings.ContainsAny(args[len(args)-1], "./-=0123456789") {
			continue // a placeholder, as in "sandbox show NAME"
		}
		checked++
		if err := parses(args); err != nil {
			t.Errorf("%s: %q does not parse: %v", ex.where, ex.line, err)
		}
	}
	if checked < 40 {
		t.Errorf("only %d documented command lines checked: the scan is broken", checked)
	}
}
