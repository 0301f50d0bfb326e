package faults

import (
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// The checker itself must catch what the fault tests look for.
func TestEvaluate(t *testing.T) {
	tx := func(tok, reply string) smtptest.Transaction {
		return smtptest.Transaction{Data: messageBody(tok, 100), Terminated: true, Reply: reply}
	}
	ok := func(tok string) result { return result{token: tok, code: 250, phase: "dot"} }
	temp := func(tok string) result { return result{token: tok, code: 451, phase: "dot"} }
	perm := func(tok string) result { return result{token: tok, code: 554, phase: "dot"} }
	connErr := func(tok string) result { return result{token: tok, connErr: true, phase: "dot"} }
	const queued = "250 2.0.0 upstream: queued as S1M1"

	for _, tc := range []struct {
		name    string
		results []result
		txs     []smtptest.Transaction
		want    counts
		violate string // a violation containing this; "" = none
	}{
		{"Clean", []result{ok("a"), temp("b"), perm("c"), connErr("d")},
			[]smtptest.Transaction{tx("a", queued), {Data: messageBody("b", 100)}},
			counts{sent: 4, ok: 1, temp: 1, perm: 1, connErr: 1, delivered: 1}, ""},
		{"Duplicate", []result{ok("a")}, []smtptest.Transaction{tx("a", queued), tx("a", queued)},
			counts{sent: 1, ok: 1, delivered: 2, dups: 1}, "DUPLICATE: a"},
		{"Lost", []result{ok("a"), ok("b")}, []smtptest.Transaction{tx("a", queued), tx("b", "")},
			counts{sent: 2, ok: 2, delivered: 1, lost: 1, unanswered: 1}, "LOST: b"},
		{"DeliveredAfter5xx", []result{perm("a")}, []smtptest.Transaction{tx("a", queued)},
			counts{sent: 1, perm: 1, delivered: 1}, "delivered although refused"},
		{"DeliveredAfterConnError", []result{connErr("a")}, []smtptest.Transaction{tx("a", queued)},
			counts{sent: 1, connErr: 1, delivered: 1}, "delivered although refused"},
		{"NeverSent", []result{ok("a")}, []smtptest.Transaction{tx("a", queued), tx("z", queued)},
			counts{sent: 1, ok: 1, delivered: 2}, "never sent: z"},
		{"TempButDelivered", []result{temp("a")}, []smtptest.Transaction{tx("a", queued)},
			counts{sent: 1, temp: 1, delivered: 1, tempDelivered: 1}, ""},
		{"RefusedByUpstream", []result{ok("a")}, []smtptest.Transaction{tx("a", "452 4.3.1 upstream: full")},
			counts{sent: 1, ok: 1, lost: 1}, "LOST: a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, violations, _ := evaluate(tc.results, tc.txs)
			if c != tc.want {
				t.Errorf("counts %+v, want %+v", c, tc.want)
			}
			joined := strings.Join(violations, "\n")
			switch {
			case tc.violate == "" && len(violations) > 0:
				t.Errorf("unexpected violations:\n%s", joined)
			case tc.violate != "" && !strings.Contains(joined, tc.violate):
				t.Errorf("violations %q, want one with %q", joined, tc.violate)
			}
		})
	}
}

func TestTokenOf(t *testing.T) {
	if tok, ok := tokenOf(messageBody("kill-s01-m0002", 500)); !ok || tok != "kill-s01-m0002" {
		t.Errorf("tokenOf = %q, %v", tok, ok)
	}
	if _, ok := tokenOf([]byte("Subject: x\r\n\r\nbody\r\n")); ok {
		t.Error("tokenOf found a token in a message without one")
	}
}
