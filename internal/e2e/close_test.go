package e2e

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// A client that has already sent its next command when the edge ends the
// session must still read the last reply and then a clean end of stream:
// closing a socket with unread input makes the kernel send RST, which
// throws away the reply in the client's receive buffer.
func TestSessionEndIsNotAReset(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Rules: []smtptest.Rule{
		{Match: `^QUIT$`, Reply: []string{"221 2.0.0 upstream: bye"}, Delay: 300 * time.Millisecond, Close: true},
	}})
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	if _, err := io.WriteString(conn, "QUIT\r\n"); err != nil {
		t.Fatal(err)
	}
	// While the upstream takes its time with QUIT, the next command
	// arrives: the edge will not read it before it closes.
	time.Sleep(100 * time.Millisecond)
	if _, err := io.WriteString(conn, "NOOP\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the edge has closed by now; a RST would have arrived too
	line, err := br.ReadString('\n')
	if err != nil || line != "221 2.0.0 upstream: bye\r\n" {
		t.Fatalf("after QUIT: %q, %v (the connection was reset?)", line, err)
	}
	if rest, err := br.ReadString('\n'); !errors.Is(err, io.EOF) || rest != "" {
		t.Fatalf("after 221: %q, %v; want a clean EOF", rest, err)
	}
}
