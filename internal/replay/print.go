package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Printer writes a run's report: text, one line per message and a summary
// line, or JSON, one object per line and a summary object.
type Printer struct {
	W           io.Writer
	JSON        bool
	OnlyChanged bool // print only changed messages and errors
}

// Result prints one message's line; it fits Run's report argument.
func (p *Printer) Result(r Result) error {
	if p.OnlyChanged && r.Status != StatusChanged && r.Status != StatusError {
		return nil
	}
	if p.JSON {
		return p.json(r)
	}
	_, err := io.WriteString(p.W, TextLine(r)+"\n")
	return err
}

// Summary prints the summary.
func (p *Printer) Summary(s Summary) error {
	if p.JSON {
		s.Type = "summary"
		return p.json(s)
	}
	_, err := io.WriteString(p.W, TextSummary(s)+"\n")
	return err
}

func (p *Printer) json(v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "accept->reject", not "accept-\u003ereject"
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := p.W.Write(b.Bytes())
	return err
}

// TextLine is a message's line in the text report:
//
//	2026-11-20 <id> from=alice@example.com to=2 accept -> reject "550 5.7.1 spam" changed
//	2026-11-20 <id> from=<> to=1 accept -> accept changed content=changed
//	2026-11-20 <id> skipped: no verdict.json
func TextLine(r Result) string {
	var b strings.Builder
	b.WriteString(r.Day + " " + word(r.ID))
	if r.Status == StatusSkipped {
		b.WriteString(" skipped: " + r.Reason)
		return b.String()
	}
	if r.Old == nil { // the record itself failed
		b.WriteString(" error: " + oneLine(r.Reason))
		return b.String()
	}
	from := "none" // no MAIL was accepted
	if r.From != nil {
		from = *r.From
	}
	fmt.Fprintf(&b, " from=%s to=%d %s -> ", word(from), r.To, outcomeText(r.Old))
	if r.Status == StatusError {
		b.WriteString("? error: " + oneLine(r.Reason))
		return b.String()
	}
	b.WriteString(outcomeText(r.New) + " " + string(r.Status))
	if r.Content != "" {
		b.WriteString(" content=" + r.Content)
	}
	if d := r.Delivery; d != nil {
		if d.Error != "" {
			b.WriteString(" delivery-failed: " + oneLine(d.Error))
		} else {
			b.WriteString(" delivered: " + oneLine(d.Reply))
		}
	}
	return b.String()
}

// TextSummary is the summary line of the text report.
func TextSummary(s Summary) string {
	head := "summary:"
	if !s.Complete {
		head = "summary (INCOMPLETE: " + oneLine(s.Stopped) + "):"
		if s.Stopped == "" {
			head = "summary (INCOMPLETE):"
		}
	}
	line := fmt.Sprintf("%s messages=%d same=%d changed=%d (accept->reject=%d reject->accept=%d other-action=%d reply=%d content=%d) skipped=%d errors=%d listed=%d",
		head, s.Messages, s.Same, s.Changed, s.AcceptToReject, s.RejectToAccept, s.ActionChanged,
		s.ReplyChanged, s.ContentChanged, s.Skipped, s.Errors, s.Listed)
	if s.Delivered+s.DeliveryFailed > 0 {
		line += fmt.Sprintf(" delivered=%d delivery-failed=%d", s.Delivered, s.DeliveryFailed)
	}
	return line
}

func outcomeText(o *Outcome) string {
	if o.Reply == "" {
		return o.Action
	}
	return o.Action + " " + strconv.Quote(o.Reply)
}

// word quotes s when it would not read as one word on the line.
func word(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == 0x7f }) {
		return strconv.Quote(s)
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ReadResume reads the JSON report of an earlier, interrupted run of the
// same replay (what --format json wrote) and returns the results a new
// run can take over, by message id: those of messages it replayed, and
// those it skipped. Errors are left out, to be tried again; so is
// anything that is not a message line (the summary).
func ReadResume(r io.Reader) (map[string]Result, error) {
	done := map[string]Result{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var res Result
		if err := json.Unmarshal(b, &res); err != nil {
			return nil, fmt.Errorf("line %d: not a JSON report line (--format json): %v", line, err)
		}
		if res.Type != "message" || res.ID == "" {
			continue
		}
		switch res.Status {
		case StatusSame, StatusChanged, StatusSkipped:
			done[res.ID] = res
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return done, nil
}
