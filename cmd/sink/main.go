// Command sink is a demo upstream for trying sluice on one machine: an
// SMTP server that accepts every message, stores it as a file and prints
// one line per message with its headers, so that a newcomer can see what
// the edge delivered. It is not a mail server.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:2525", "address to listen on")
	dir := flag.String("dir", "sink-mail", "directory for received messages")
	send := flag.String("send", "", "instead of listening, send one test message to this address (host:port) and exit")
	body := flag.String("body", "Hello from the sluice demo.", "with -send: the message body")
	flag.Parse()
	if *send != "" {
		os.Exit(sendTest(*send, *body))
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		log.Fatal(err)
	}
	s := smtp.NewServer(&backend{dir: *dir})
	s.Addr = *addr
	s.Domain = "sink.localhost"
	s.ReadTimeout = time.Minute
	s.WriteTimeout = time.Minute
	s.MaxMessageBytes = 64 << 20
	s.AllowInsecureAuth = true
	log.Printf("sink: listening on %s, storing messages in %s", *addr, *dir)
	log.Fatal(s.ListenAndServe())
}

// sendTest sends one message, like swaks would, and prints the outcome.
func sendTest(addr, body string) int {
	msg := "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\n" +
		"Subject: sluice demo\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\n\r\n" + body + "\r\n"
	c, err := smtp.Dial(addr)
	if err == nil {
		err = c.SendMail("alice@example.com", []string{"bob@example.com"}, strings.NewReader(msg))
		c.Close()
	}
	if err != nil {
		fmt.Printf("refused: %v\n", err)
		return 1
	}
	fmt.Println("accepted")
	return 0
}

type backend struct {
	dir string
	n   atomic.Int64
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{b: b}, nil }

type session struct {
	b    *backend
	from string
	to   []string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error   { s.to = append(s.to, to); return nil }
func (s *session) Reset()                                      { s.from, s.to = "", nil }
func (s *session) Logout() error                               { return nil }

func (s *session) Data(r io.Reader) error {
	n := s.b.n.Add(1)
	name := filepath.Join(s.b.dir, fmt.Sprintf("%s-%04d.eml", time.Now().Format("20060102-150405"), n))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var headers []string
	br := bufio.NewReader(io.TeeReader(r, f))
	for {
		line, err := br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if line == "" || err != nil {
			break
		}
		headers = append(headers, line)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	log.Printf("sink: delivered %s from=<%s> to=%v\n    %s", name, s.from, s.to, strings.Join(headers, "\n    "))
	return nil
}
