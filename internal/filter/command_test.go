package filter

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 10: a simple FilterCommand runs without a shell in between (one
// process per message, not two); anything the shell must interpret still
// goes through /bin/sh -c.
func TestSimpleCommandsRunDirectly(t *testing.T) {
	env := []string{"PATH=/usr/bin:/bin"}
	for _, tc := range []struct {
		line   string
		direct bool
	}{
		{"cat", true},
		{"/bin/cat -u", true},
		{"sleep 0.5", true},
		{"tee /tmp/x.eml", true},
		{"cat | tee x", false},
		{"cat > x", false},
		{`printf '%s' "$SENDER"`, false},
		{"echo hi", false},               // dash's echo differs from /bin/echo
		{"LANG=C cat", false},            // an assignment
		{"no-such-filter-sluice", false}, // the shell reports it: 127
		{"cat *.eml", false},
		{"cat; cat", false},
		{"", false},
	} {
		argv, _, ok := simpleCommand(tc.line, env)
		if ok != tc.direct {
			t.Errorf("%q: direct %v (%q), want %v", tc.line, ok, argv, tc.direct)
		}
	}

	// The process the run starts is the program itself.
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, _, err := run(t, Spec{Command: "sleep 0.5", Timeout: 10 * time.Second}, stdEnv(), msg)
		if err != nil || res.Action != Accept {
			t.Errorf("sleep 0.5: %+v, %v", res, err)
		}
	}()
	var comms []string
	for deadline := time.Now().Add(5 * time.Second); len(comms) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		comms = childComms(t)
	}
	<-done
	if len(comms) != 1 || comms[0] != "sleep" {
		t.Errorf("the run's processes: %q, want sleep alone", comms)
	}
}

// childComms are the command names of this process's children.
func childComms(t *testing.T) []string {
	t.Helper()
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		fields := strings.Fields(s[closing+1:])
		if len(fields) > 1 && fields[1] == self {
			out = append(out, s[open+1:closing])
		}
	}
	return out
}
