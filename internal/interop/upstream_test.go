package interop

import (
	"strings"
	"testing"
)

// TestUpstreamRefusesOrVanishes: smtp-sink told to fail at the final dot
// or at RCPT. The edge relays the upstream's own refusal, and turns an
// upstream that vanished without a reply into a 4xx (the failure rule:
// never a 250 for mail the upstream did not take, never a 5xx for an
// infrastructure failure), so the sender keeps the message and retries.
func TestUpstreamRefusesOrVanishes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sinkOpts []string
		exit     int    // swaks's exit status
		after    string // the reply's stage: "data" or "rcpt"
		reply    string // prefix of the client's reply
	}{
		// -f .: 5xx after the message; relayed as the upstream said it.
		{"hard reject after dot", []string{"-f", "."}, 26, "data", "500 5.3.0 Error: command failed"},
		// -Q .: 421 and disconnect after the message; relayed.
		{"421 after dot", []string{"-Q", "."}, 26, "data", "421 4.0.0 Server closing connection"},
		// -q .: disconnect with no reply at all: a temporary failure.
		{"vanishes after dot", []string{"-q", "."}, 26, "data", "4"},
		// -r RCPT: the upstream's soft refusal of the recipient, relayed.
		{"soft reject of RCPT", []string{"-r", "RCPT"}, 24, "rcpt", "450 4.3.0 Error: command failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := startSMTPSink(t, tc.sinkOpts...)
			e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\n")
			r := swaks(t, e.addr, nil)
			if r.code != tc.exit {
				t.Errorf("swaks exit status %d, want %d\n%s", r.code, tc.exit, r.stdout)
			}
			var got string
			if tc.after == "data" {
				got = dataReply(t, r.stdout)
			} else {
				for _, l := range strings.Split(r.stdout, "\n") {
					if strings.HasPrefix(l, "<** ") {
						got = strings.TrimSpace(l[4:])
						break
					}
				}
			}
			if !strings.HasPrefix(got, tc.reply) {
				t.Errorf("client got %q, want %q...", got, tc.reply)
			}
		})
	}
}
