package postfixtest

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Message is one queued message as postcat shows it: Postfix's envelope,
// what it recorded about the client, and the content it will deliver.
type Message struct {
	QueueID    string
	Queue      string // "incoming" (no queue manager runs)
	Sender     string // "" for the null sender <>
	Recipients []string
	// The client as Postfix's policy saw it: the connection, or what an
	// authorised XCLIENT said (client_address, client_name, helo_name).
	ClientAddr string
	ClientName string
	Helo       string
	// The client as logged: what an authorised XFORWARD said, otherwise
	// the same as above (log_client_address, log_helo_name).
	LogClientAddr string
	LogHelo       string
	// Attrs are every named attribute of the envelope.
	Attrs map[string]string
	// Content is the message as queued, headers (with Postfix's Received
	// line) and body, one line per record, LF-terminated.
	Content string
	// Postcat is postcat's whole output, for failure messages.
	Postcat string
}

// String is the envelope in one line, for failure messages.
func (m Message) String() string {
	return fmt.Sprintf("%s from=<%s> to=%q client=%s[%s] helo=%q log_client=%s", m.QueueID, m.Sender,
		m.Recipients, m.ClientName, m.ClientAddr, m.Helo, m.LogClientAddr)
}

// queues are where a queued message can be; without a queue manager every
// message stays in incoming.
var queues = []string{"incoming", "active", "deferred", "hold"}

// Messages returns every complete message in the queue, oldest first.
func (s *Server) Messages() ([]Message, error) {
	type file struct {
		path, queue string
		mod         time.Time
	}
	var files []file
	for _, q := range queues {
		root := filepath.Join(s.spool, q)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return nil // removed meanwhile
			}
			// The cleanup server sets the owner's execute bit when the
			// file is complete.
			if fi.Mode()&0o100 != 0 {
				files = append(files, file{path, q, fi.ModTime()})
			}
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	msgs := make([]Message, 0, len(files))
	for _, f := range files {
		out, err := s.run(s.tools.postcat, "-c", s.conf, f.path)
		if err != nil {
			if _, serr := os.Stat(f.path); os.IsNotExist(serr) {
				continue // purged meanwhile
			}
			return nil, err
		}
		m, err := parsePostcat(out)
		if err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", f.path, err, out)
		}
		m.QueueID, m.Queue = filepath.Base(f.path), f.queue
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// MessagesWith returns the queued messages whose envelope or content holds
// token (a case's unique Subject, say), oldest first, so that tests
// sharing one server can tell their messages apart.
func (s *Server) MessagesWith(token string) ([]Message, error) {
	all, err := s.Messages()
	if err != nil {
		return nil, err
	}
	var out []Message
	for _, m := range all {
		if strings.Contains(m.Postcat, token) {
			out = append(out, m)
		}
	}
	return out, nil
}

// Purge deletes every queued message (postsuper -d ALL).
func (s *Server) Purge() error {
	_, err := s.run(s.tools.postsuper, "-c", s.conf, "-d", "ALL")
	return err
}

// run runs one of Postfix's tools and returns its standard output.
func (s *Server) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// postcat's section headings: "*** ENVELOPE RECORDS incoming/ID ***".
const (
	secEnvelope = "*** ENVELOPE RECORDS "
	secContent  = "*** MESSAGE CONTENTS "
	secExtract  = "*** HEADER EXTRACTED "
	secEnd      = "*** MESSAGE FILE END "
)

// parsePostcat reads postcat's output: "name: value" envelope records,
// then the content, then the records Postfix extracted from the headers.
// A heading counts only with the queue file's name that the first one
// gave, so that no line of a message can pass for one.
func parsePostcat(out string) (Message, error) {
	m := Message{Attrs: map[string]string{}, Postcat: out}
	first, _, _ := strings.Cut(out, "\n")
	file, ok := strings.CutPrefix(first, secEnvelope)
	if !ok {
		return m, fmt.Errorf("postcat output does not start with %q", secEnvelope)
	}
	section := ""
	var content strings.Builder
	sawSender := false
	for _, line := range strings.SplitAfter(out, "\n") {
		if line == "" {
			continue
		}
		bare := strings.TrimSuffix(line, "\n")
		switch bare {
		case secEnvelope + file:
			section = secEnvelope
			continue
		case secContent + file:
			section = secContent
			continue
		case secExtract + file, secEnd + file:
			section = secExtract
			continue
		}
		switch section {
		case secContent:
			content.WriteString(line)
		case secEnvelope, secExtract:
			name, value, ok := strings.Cut(bare, ": ")
			if !ok {
				// "sender: " for <> may lose its space in transit.
				name, value = strings.TrimSuffix(bare, ":"), ""
			}
			switch name {
			case "sender":
				m.Sender, sawSender = value, true
			case "recipient":
				m.Recipients = append(m.Recipients, value)
			case "named_attribute":
				if k, v, ok := strings.Cut(value, "="); ok {
					m.Attrs[k] = v
				}
			}
		}
	}
	if !sawSender {
		return m, fmt.Errorf("postcat output without a sender record")
	}
	m.Content = content.String()
	m.ClientAddr = m.Attrs["client_address"]
	m.ClientName = m.Attrs["client_name"]
	m.Helo = m.Attrs["helo_name"]
	m.LogClientAddr = m.Attrs["log_client_address"]
	m.LogHelo = m.Attrs["log_helo_name"]
	return m, nil
}
