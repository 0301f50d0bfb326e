package interop

import (
	"fmt"
	"testing"
)

// TestSMTPSource200: Postfix's smtp-source sends 200 messages of 10 KiB
// over 5 parallel sessions through the edge into smtp-sink; each arrives
// exactly once, its body byte for byte as smtp-source sends it directly.
func TestSMTPSource200(t *testing.T) {
	const n = 200
	source := tool(t, "smtp-source", "postfix")
	// -N numbers the recipients (1bob@..., 2bob@...), which tells the
	// messages apart; smtp-source's Message-Ids are not unique.
	args := func(count int, addr string) []string {
		return []string{source, "-c", "-N", "-m", fmt.Sprint(count), "-s", "5", "-l", "10240",
			"-f", "alice@example.com", "-t", "bob@example.com", addr}
	}

	// The reference: one message straight into a sink of its own.
	ref := startSMTPSink(t)
	if r := runCommand(t, "", nil, args(1, ref.addr)...); r.code != 0 {
		t.Fatalf("smtp-source to smtp-sink: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	refs := ref.waitMessages(t, 1)
	want := refs[0].body()
	// 10240 bytes on the wire with CRLF; smtp-sink's dump has LF only.
	if len(want) < 10000 {
		t.Fatalf("reference body is %d bytes, want about 10240", len(want))
	}

	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\nHeader: X-Filtered: by sluice\n")
	if r := runCommand(t, "", nil, args(n, e.addr)...); r.code != 0 {
		t.Fatalf("smtp-source through the edge: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	ms := sink.waitMessages(t, n)
	if len(ms) != n {
		t.Errorf("smtp-sink got %d messages, want %d", len(ms), n)
	}
	seen := make(map[string]int)
	for _, m := range ms {
		rcpt := m.header("X-Rcpt-Args")
		seen[rcpt]++
		if m.header("X-Mail-Args") != "<alice@example.com>" || m.header("X-Filtered") != "by sluice" {
			t.Errorf("message to %s: X-Mail-Args %q, X-Filtered %q", rcpt, m.header("X-Mail-Args"), m.header("X-Filtered"))
		}
		if got := m.body(); got != want {
			t.Errorf("message to %s: body of %d bytes differs from smtp-source's %d", rcpt, len(got), len(want))
		}
	}
	for i := 1; i <= n; i++ {
		rcpt := fmt.Sprintf("<%dbob@example.com>", i)
		if seen[rcpt] != 1 {
			t.Errorf("message %d (%s) arrived %d times, want once", i, rcpt, seen[rcpt])
		}
	}
}
