package e2e

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// shutdownAsync starts Shutdown with drain and returns a channel closed
// when it returns, once the listener is closed (new clients refused). Its
// probes may open upstream sessions of their own, after the test's.
func shutdownAsync(t *testing.T, h *harness, drain time.Duration) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.shutdown(drain)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", h.addr, time.Second)
		if err != nil {
			return done
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the edge still accepts connections after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wait(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// is421 checks that got is one 421 line of the edge's own (behaviour.md#connection).
func is421(t *testing.T, got []string) {
	t.Helper()
	if len(got) != 1 || !strings.HasPrefix(got[0], "421 ") || strings.Contains(got[0], "upstream") {
		t.Fatalf("client got %q, expected one 421 of the edge's own, then EOF", got)
	}
}

// behaviour.md#connection (behaviour.md#shutdown): Shutdown ends an idle session with 421 and a QUIT
// upstream.
func TestShutdownIdleSession(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat")
	c := h.hello(t)
	done := shutdownAsync(t, h, 10*time.Second)
	is421(t, smtptest.Lines(c.ReadAll(10*time.Second)))
	wait(t, done, "Shutdown")
	first(t, h, cEHLO, cQUIT)
}

// behaviour.md#connection: a message in flight is completed before the session ends.
func TestShutdownMessageInFlight(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
	c.CmdLine("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK)
	c.CmdExpect("DATA", 354)
	c.Write([]byte(msg1[:40]))
	done := shutdownAsync(t, h, 10*time.Second)
	c.Write([]byte(msg1[40:] + ".\r\n"))
	c.ExpectLine(smtptest.Queued(1, 1))
	is421(t, smtptest.Lines(c.ReadAll(10*time.Second)))
	wait(t, done, "Shutdown")
	first(t, h, cEHLO, cMAIL, cRCPT, cDATA, cQUIT)
	h.delivered(t, txn(msg1))
}

// behaviour.md#connection: an open transaction gets the drain period, then 421.
func TestShutdownOpenTransaction(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat")
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
	done := shutdownAsync(t, h, time.Second)
	is421(t, smtptest.Lines(c.ReadAll(10*time.Second)))
	wait(t, done, "Shutdown")
	first(t, h, cEHLO, cMAIL, cQUIT)
	h.delivered(t)
}

// first checks the commands of the first upstream session.
func first(t *testing.T, h *harness, want ...string) {
	t.Helper()
	eqLines(t, "upstream commands", h.sessions(t)[0].Commands, want)
}

// behaviour.md#connection: between Drain and the client's next command there is no
// window for a new transaction: a client that finishes its transaction
// gets 421 instead of the next reply.
func TestShutdownAfterTransaction(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat")
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
	done := shutdownAsync(t, h, 10*time.Second)
	c.CmdLine("RSET", smtptest.ReplyReset)
	is421(t, smtptest.Lines(c.ReadAll(10*time.Second)))
	wait(t, done, "Shutdown")
	first(t, h, cEHLO, cMAIL, cRSET, cQUIT)
}

// behaviour.md#connection: a client still sending its message when the drain period
// ends gets a 421 too, not a silent close; nothing is delivered.
func TestShutdownStalledData(t *testing.T) {
	t.Parallel()
	for _, skip := range []bool{false, true} {
		name := "filtered"
		if skip {
			name = "authenticated skip"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := start(t, smtptest.Config{Extensions: authExts}, "FilterCommand: cat", "Skip: authenticated")
			c := h.hello(t)
			data := "354 Start mail input; end with <CRLF>.<CRLF>"
			if skip {
				c.CmdLine(authPlain, smtptest.ReplyAuthOK)
				data = smtptest.ReplyData
			}
			c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
			c.CmdLine("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK)
			c.CmdLine("DATA", data)
			c.Write([]byte(msg1[:40]))
			done := shutdownAsync(t, h, time.Second)
			is421(t, smtptest.Lines(c.ReadAll(10*time.Second)))
			wait(t, done, "Shutdown")
			if ms := h.up.Messages(); len(ms) != 0 {
				t.Fatalf("delivered %d messages", len(ms))
			}
		})
	}
}

// The embedded JetStream store lives under data_dir while the edge runs
// (jobs are on disk) and is removed by a clean shutdown: it only ever
// holds jobs of sessions that are gone.
func TestShutdownRemovesEmbeddedStore(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat")
	c := h.hello(t)
	sendAlice(t, c, "Subject: x\r\n\r\nbody\r\n", smtptest.Queued(1, 1))
	c.CmdExpect("QUIT", 221)
	dirs, err := filepath.Glob(filepath.Join(h.dataDir, "nats", "edge-*", "jetstream"))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("embedded JetStream store while running: %v, %v", dirs, err)
	}
	h.shutdown(10 * time.Second)
	if _, err := os.Stat(dirs[0]); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after shutdown %s: %v", dirs[0], err)
	}
}
