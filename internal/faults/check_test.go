package faults

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// counts is one test's line of the fault table.
type counts struct {
	sent, ok, temp, perm, connErr int
	delivered, dups, lost         int
	// tempDelivered: a 4xx for a message the upstream accepted, its 250
	// lost on the way back; the one case SMTP itself cannot avoid.
	tempDelivered int
	// unanswered: the upstream received the final dot and never replied;
	// an SMTP server must not deliver such a message.
	unanswered int
}

func (c counts) String() string {
	return fmt.Sprintf("sent=%d 250=%d 4xx=%d 5xx=%d conn_err=%d delivered=%d duplicates=%d lost=%d 4xx_but_delivered=%d",
		c.sent, c.ok, c.temp, c.perm, c.connErr, c.delivered, c.dups, c.lost, c.tempDelivered)
}

// tokenOf finds the X-Faults-Token header in a message as the upstream
// received it.
func tokenOf(data []byte) (string, bool) {
	const h = "X-Faults-Token: "
	i := bytes.Index(data, []byte(h))
	if i < 0 {
		return "", false
	}
	rest := data[i+len(h):]
	if j := bytes.IndexAny(rest, "\r\n"); j >= 0 {
		rest = rest[:j]
	}
	return string(rest), true
}

// checkInvariants checks the failure rule on every message sent against
// what the upstream (all its incarnations) accepted, fails t on any
// violation, and reports the counts.
func checkInvariants(t *testing.T, results []result, txs []smtptest.Transaction) counts {
	t.Helper()
	c, violations, notes := evaluate(results, txs)
	for _, v := range violations {
		t.Error(v)
	}
	for _, n := range notes {
		t.Log(n)
	}
	report(t, c.String())
	return c
}

// evaluate applies the invariants:
//
//   - 250: delivered exactly once (the filter never drops);
//   - 4xx: not delivered, unless the upstream accepted it and its reply
//     was lost on the way back (counted apart, and noted);
//   - 5xx or a connection error: not delivered;
//   - no message delivered twice, none delivered that was never sent.
//
// A message counts as delivered when the upstream received its final dot
// and answered 2xx.
func evaluate(results []result, txs []smtptest.Transaction) (c counts, violations, notes []string) {
	fail := func(format string, args ...any) { violations = append(violations, fmt.Sprintf(format, args...)) }
	delivered := map[string]int{}
	for _, tx := range txs {
		if !tx.Terminated {
			continue // aborted DATA: nothing to deliver
		}
		tok, ok := tokenOf(tx.Data)
		if !ok {
			fail("the upstream received a message without a token: %.200q", tx.Data)
			continue
		}
		switch {
		case strings.HasPrefix(tx.Reply, "2"):
			delivered[tok]++
			c.delivered++
		case tx.Reply == "":
			c.unanswered++
		}
	}
	sent := map[string]result{}
	for _, r := range results {
		if _, dup := sent[r.token]; dup {
			fail("token %s sent twice (test bug)", r.token)
		}
		sent[r.token] = r
	}
	toks := make([]string, 0, len(delivered))
	for tok := range delivered {
		toks = append(toks, tok)
	}
	sort.Strings(toks)
	for _, tok := range toks {
		if n := delivered[tok]; n > 1 {
			c.dups += n - 1
			fail("DUPLICATE: %s delivered %d times (client saw %s)", tok, n, sent[tok])
		}
		if _, ok := sent[tok]; !ok {
			fail("delivered but never sent: %s", tok)
		}
	}
	var tempDelivered []string
	for _, r := range results {
		c.sent++
		n := delivered[r.token]
		switch {
		case r.connErr:
			c.connErr++
		case r.code == 250:
			c.ok++
		case r.code >= 400 && r.code < 500:
			c.temp++
		case r.code >= 500 && r.code < 600:
			c.perm++
		default:
			fail("unexpected reply: %s", r)
		}
		switch {
		case r.code == 250 && !r.connErr && n == 0:
			c.lost++
			fail("LOST: %s but not delivered", r)
		case r.code >= 400 && r.code < 500 && n > 0:
			c.tempDelivered++
			tempDelivered = append(tempDelivered, r.String())
		case (r.connErr || r.code >= 500) && n > 0:
			fail("delivered although refused: %s", r)
		}
	}
	if len(tempDelivered) > 0 {
		notes = append(notes, fmt.Sprintf("4xx for %d messages the upstream accepted (its reply lost on the way back): %s",
			len(tempDelivered), strings.Join(tempDelivered, "; ")))
	}
	if c.unanswered > 0 {
		notes = append(notes, fmt.Sprintf("%d messages reached the upstream's final dot without its reply (not delivered)", c.unanswered))
	}
	return c, violations, notes
}

// replies groups the results' replies, for the log.
func replies(results []result) string {
	m := map[string]int{}
	for _, r := range results {
		k := fmt.Sprintf("%d %s", r.code, r.phase)
		if r.connErr {
			k = "conn-error " + r.phase
		} else if r.code != 250 {
			k = r.reply + " (" + r.phase + ")"
		}
		m[k]++
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %4d x %s", m[k], k)
	}
	return b.String()
}

// run is one line of the filter run log.
type run struct {
	token  string
	pid    int
	kind   string // start or end
	worker string
}

// readRuns reads the run log, by token.
func readRuns(t testing.TB, path string) map[string][]run {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]run{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 4 || (fs[2] != "start" && fs[2] != "end") {
			t.Errorf("malformed run log line %q", sc.Text())
			continue
		}
		pid, err := strconv.Atoi(fs[1])
		if err != nil {
			t.Errorf("malformed run log line %q", sc.Text())
			continue
		}
		out[fs[0]] = append(out[fs[0]], run{token: fs[0], pid: pid, kind: fs[2], worker: fs[3]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// starts returns the workers that started a run for the token, in order.
func starts(runs []run) []string {
	var out []string
	for _, r := range runs {
		if r.kind == "start" {
			out = append(out, r.worker)
		}
	}
	return out
}
