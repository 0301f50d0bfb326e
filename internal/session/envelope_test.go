package session

import (
	"strings"
	"testing"
)

// A worker is another process: an envelope it names reaches the
// upstream only if it can go on the wire as it is.
func TestNewEnvelopeValid(t *testing.T) {
	for _, tc := range []struct {
		env  *NewEnvelope
		want bool
	}{
		{nil, true},
		{&NewEnvelope{Sender: "a@example.com", Recipients: []string{"b@example.com"}}, true},
		{&NewEnvelope{Sender: "<>", Recipients: []string{"b@example.com"}}, true},
		{&NewEnvelope{Sender: "a@example.com"}, false},                                                // nobody to deliver to
		{&NewEnvelope{Sender: "a@example.com", Recipients: []string{"b@example.com\r\nDATA"}}, false}, // smuggled command
		{&NewEnvelope{Sender: "a@example.com", Recipients: []string{"<b@example.com>"}}, false},
		{&NewEnvelope{Sender: "a b@example.com", Recipients: []string{"b@example.com"}}, false},
		{&NewEnvelope{Sender: "", Recipients: []string{"b@example.com"}}, false},
		{&NewEnvelope{Sender: "a@example.com", Recipients: []string{strings.Repeat("x", 600)}}, false},
	} {
		if got := tc.env.valid(); got != tc.want {
			t.Errorf("%+v: valid %v, want %v", tc.env, got, tc.want)
		}
		v := &Verdict{Action: ActionAccept, Envelope: tc.env}
		if _, ok := v.reply(); ok != tc.want {
			t.Errorf("%+v: an accept with it is usable: %v, want %v", tc.env, ok, tc.want)
		}
	}
}
