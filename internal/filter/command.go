package filter

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// command is how a FilterCommand is started. A simple command, a program
// and plain words with nothing for the shell to interpret
// (`/usr/bin/clamdscan --stdout -`, `cat`), is executed directly: exactly
// what `/bin/sh -c` would run, without a shell process in between, which
// saves a fork and an exec per message. Anything else (quotes, variables,
// pipes, redirections, globs, assignments, builtins), and a program that
// is not found, goes to `/bin/sh -c`, which also reports a missing
// program as proxsmtpd's filters see it (status 127, "not found").
func command(line string, env []string) *exec.Cmd {
	if argv, path, ok := simpleCommand(line, env); ok {
		return &exec.Cmd{Path: path, Args: argv}
	}
	return exec.Command("/bin/sh", "-c", line)
}

// shellBuiltins are dash's builtins and keywords: a first word the shell
// would not look for on PATH, or would run differently than the program
// of that name (echo, printf, test, kill).
var shellBuiltins = map[string]bool{
	"alias": true, "bg": true, "break": true, "cd": true, "chdir": true, "command": true, "continue": true,
	"echo": true, "eval": true, "exec": true, "exit": true, "export": true, "false": true, "fc": true, "fg": true,
	"getopts": true, "hash": true, "jobs": true, "kill": true, "local": true, "printf": true, "pwd": true,
	"read": true, "readonly": true, "return": true, "set": true, "shift": true, "test": true, "times": true,
	"trap": true, "true": true, "type": true, "ulimit": true, "umask": true, "unalias": true, "unset": true,
	"wait": true, "[": true, ".": true, ":": true, "if": true, "then": true, "else": true, "elif": true,
	"fi": true, "for": true, "while": true, "until": true, "do": true, "done": true, "case": true, "esac": true,
	"in": true, "!": true, "{": true, "}": true,
}

// simpleCommand splits line into words if the shell would take it as
// they are, and finds the program as the shell would (a name on the
// filter's PATH, a path as given).
func simpleCommand(line string, env []string) (argv []string, path string, ok bool) {
	for _, r := range line {
		if !plainRune(r) {
			return nil, "", false
		}
	}
	argv = strings.Fields(line)
	if len(argv) == 0 || !programWord(argv[0]) || strings.ContainsRune(argv[0], '=') {
		return nil, "", false
	}
	path, ok = lookPath(argv[0], env)
	return argv, path, ok
}

// programWord reports whether the shell would look for word as a
// program: plain, and not one of its builtins or keywords.
func programWord(word string) bool {
	if shellBuiltins[word] || strings.HasPrefix(word, "-") {
		return false
	}
	for _, r := range word {
		if !plainRune(r) {
			return false
		}
	}
	return true
}

// FindProgram finds the program a FilterCommand runs first (its first
// word after any VAR=value assignments) as the shell would, with env's
// PATH, for a start-up warning: the program, and why it cannot run. A
// command that starts with shell syntax or a builtin is not looked for.
func FindProgram(line string, env []string) (string, error) {
	words := strings.Fields(line)
	for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "=") {
		words = words[1:]
	}
	if len(words) == 0 || !programWord(words[0]) {
		return "", nil
	}
	prog := words[0]
	if _, ok := lookPath(prog, env); ok {
		return prog, nil
	}
	switch _, err := os.Stat(prog); {
	case !strings.Contains(prog, "/"):
		return prog, errors.New("not found on PATH")
	case err != nil:
		return prog, errors.New("no such file")
	}
	return prog, errors.New("not an executable file")
}

// plainRune reports whether r means itself to the shell: letters,
// digits, blanks and a few punctuation marks; no quotes, $, `, \, globs,
// ~, braces, redirections, pipes, ;, &, #, or newlines.
func plainRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r == ' ' || r == '\t':
		return true
	}
	return strings.ContainsRune("_./:=+,@%-", r)
}

// lookPath finds name as the shell would with the filter's PATH: a name
// with a slash as it is, else the first executable file of that name in
// PATH's directories (an empty entry is the current directory).
func lookPath(name string, env []string) (string, bool) {
	if strings.Contains(name, "/") {
		return name, isExecutable(name)
	}
	pathEnv := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" // Debian dash's when PATH is unset
	for _, kv := range env {
		if v, found := strings.CutPrefix(kv, "PATH="); found {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p, true
		}
	}
	return "", false
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
