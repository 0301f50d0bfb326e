package session

import (
	"strings"

	"github.com/sluice-mail/sluice/internal/wire"
)

// Action is what a verdict tells the session to do with a message.
type Action int

// The verdicts a filter can give. The zero Action is no verdict at all,
// which the session treats as a malformed one.
const (
	ActionUnknown  Action = iota
	ActionAccept          // deliver the message (the filtered copy if Filtered)
	ActionReject          // refuse it with the verdict's 4xx or 5xx reply
	ActionDrop            // answer the verdict's 2xx reply, deliver nothing
	ActionTempFail        // answer the verdict's 4xx reply: the filter gave no answer
)

var actionNames = [...]string{"ACTION_UNSPECIFIED", "ACTION_ACCEPT", "ACTION_REJECT", "ACTION_DROP", "ACTION_TEMPFAIL"}

// String is the action as the job schema spells it, for logs.
func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return actionNames[0]
	}
	return actionNames[a]
}

// Verdict is the filter's answer about one message, as the session acts
// on it. The pipeline translates whatever its workers speak into this.
type Verdict struct {
	Action   Action
	Reply    string // the reply line for anything but ActionAccept
	Status   string // the summary line's status: FILTERED, FILTER-ERROR, or the filter's own message
	Detail   string // for operators: exit status, signal, timeout
	Filtered bool   // deliver the filter's output rather than the message as received
	// Envelope, when a milter changed it, is what the edge delivers to
	// instead of the client's envelope; nil for the client's.
	Envelope *NewEnvelope
}

// NewEnvelope is an envelope a milter changed: the sender ("<>" for the
// null sender) and every recipient, without brackets.
type NewEnvelope struct {
	Sender     string
	Recipients []string
}

// maxNewRecipients bounds the recipients of a changed envelope.
const maxNewRecipients = 1000

// valid reports whether a worker's envelope can be put on the wire: at
// least one recipient, and addresses without spaces, brackets or control
// characters.
func (e *NewEnvelope) valid() bool {
	if e == nil {
		return true
	}
	ok := func(a string) bool {
		return a != "" && len(a) <= 512 && !strings.ContainsFunc(a, func(r rune) bool {
			return r <= ' ' || r == 0x7f || r == '<' || r == '>'
		})
	}
	if (e.Sender != "<>" && !ok(e.Sender)) || len(e.Recipients) == 0 || len(e.Recipients) > maxNewRecipients {
		return false
	}
	for _, r := range e.Recipients {
		if !ok(r) {
			return false
		}
	}
	return true
}

// reply checks the reply of a verdict against its action: a worker is
// another process, possibly another version; nothing it says reaches the
// client unless it is one well-formed reply line of the right class.
func (v *Verdict) reply() (string, bool) {
	if v == nil {
		return "", false
	}
	if v.Action == ActionAccept {
		return "", v.Envelope.valid()
	}
	rep, err := wire.ParseReply(v.Reply)
	if err != nil {
		return "", false
	}
	var ok bool
	switch class := rep.Class(); v.Action {
	case ActionDrop:
		ok = class == 2
	case ActionReject:
		ok = class == 4 || class == 5
	case ActionTempFail:
		ok = class == 4
	default:
		ok = false
	}
	return rep.Lines[0], ok
}

// Kind is what became of one DATA attempt. Its String is the word metrics
// count it under; the summary line keeps proxsmtpd's words (outcome.Status).
type Kind int

// The outcomes of a DATA attempt.
const (
	Delivered       Kind = iota // the upstream took the message
	Rejected                    // the filter (or FilterType reject) refused it
	Dropped                     // the filter dropped it: 2xx to the sender, nothing delivered
	TempFailed                  // the filter or the infrastructure failed: 4xx
	TooBig                      // over max_message_size
	BareLineEnding              // a bare CR or LF, with bare_line_endings: reject
	NULByte                     // a NUL byte, with nul_bytes: reject
	Deadline                    // the client took longer than data_deadline
	ClientGone                  // the client went away mid-message
	UpstreamRefused             // the upstream refused DATA or the message
	UpstreamError               // the upstream failed while taking the message
	Skipped                     // relayed unfiltered (Skip: authenticated)
)

var kindNames = [...]string{
	Delivered:       "filtered",
	Rejected:        "rejected",
	Dropped:         "dropped",
	TempFailed:      "tempfail",
	TooBig:          "too_big",
	BareLineEnding:  "bare_line_ending",
	NULByte:         "nul_byte",
	Deadline:        "deadline",
	ClientGone:      "client_gone",
	UpstreamRefused: "upstream_refused",
	UpstreamError:   "upstream_error",
	Skipped:         "skipped",
}

// Kinds lists every Kind, for metrics that show each from the start.
func Kinds() []Kind {
	ks := make([]Kind, len(kindNames))
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "unknown"
	}
	return kindNames[k]
}

// status is the summary line's word for an outcome that has no status of
// its own (a verdict brings its own).
func (k Kind) status() string {
	switch k {
	case Rejected:
		return "REJECTED"
	case TempFailed, ClientGone:
		return "FILTER-ERROR" // proxsmtpd's word for both
	case TooBig:
		return "TOO-BIG"
	case BareLineEnding:
		return "BARE-LINE-ENDING"
	case NULByte:
		return "NUL-BYTE"
	case Deadline:
		return "DEADLINE"
	case UpstreamRefused:
		return "UPSTREAM-REFUSED"
	case UpstreamError:
		return "UPSTREAM-ERROR"
	case Skipped:
		return "SKIPPED"
	}
	return "FILTERED"
}

// outcome is everything the session says about one DATA attempt: to the
// upstream (whether its transaction is reset), to the log and metrics,
// and to the client.
type outcome struct {
	Kind   Kind
	Status string // the summary line's status; "" for Kind's word
	Reply  string // the edge's own reply line; "" when relayed or when nobody listens
	Attrs  []any  // more for the summary line: err, reply, detail, duration...

	relayed *wire.Reply // the upstream's reply, relayed verbatim
	reset   bool        // RSET the upstream: its transaction is still open
	end     bool        // the session cannot go on after this
}

// verdictOutcome is the outcome of a verdict other than accept. A
// filter's 4xx counts as a temporary failure, whatever its action.
func verdictOutcome(v *Verdict, reply string) outcome {
	k := Rejected
	switch {
	case v.Action == ActionDrop:
		k = Dropped
	case strings.HasPrefix(reply, "4"):
		k = TempFailed
	}
	return outcome{Kind: k, Status: v.Status, Reply: reply, reset: true, Attrs: []any{"reply", reply, "detail", v.Detail}}
}

// conclude ends one DATA attempt: the upstream's transaction reset when it
// is still open, the summary line and metric, then the answer. It returns
// errStop when the session is over.
func (s *Session) conclude(m *Message, o outcome) error {
	if o.reset {
		s.up.Command("RSET")
	}
	s.logMessage(m, o)
	switch o.Kind {
	case Deadline:
		s.limit(LimitDataDeadline)
	case Dropped:
		s.errors = 0 // as good as delivered, for the sender
	case Delivered, Skipped:
		if o.relayed != nil && o.relayed.Class() == 2 {
			s.errors = 0 // a client that delivers mail is not probing (Postfix does the same)
		}
	}
	var err error
	switch {
	case o.relayed != nil:
		err = s.relay(*o.relayed)
	case o.Reply != "":
		err = s.reply(o.Reply)
	}
	if o.Kind == Deadline {
		s.up.Quit()
	}
	if o.end || err != nil || s.up.Err() != nil {
		return errStop
	}
	return nil
}

// maxLoggedRecipients bounds the recipients named in a summary line: a
// thousand of them would make a line of a quarter megabyte, which syslog
// cuts anyway. The job record in the store has them all.
const maxLoggedRecipients = 50

// logMessage writes the one summary line per DATA attempt (proxsmtpd's
// "client=..., from=..., to=..., status=...") and counts the outcome.
func (s *Session) logMessage(m *Message, o outcome) {
	if s.cfg.OnMessage != nil {
		s.cfg.OnMessage(o.Kind)
	}
	status := o.Status
	if status == "" && o.Kind != Delivered {
		status = o.Kind.status()
	}
	args := make([]any, 0, 12+len(o.Attrs))
	if m != nil {
		args = append(args, "id", m.ID)
	}
	if s.txn.sender != nil {
		args = append(args, "from", *s.txn.sender)
	}
	// One attribute, a list: JSON tools keep one value per key.
	if rs := s.txn.recipients; len(rs) > 0 {
		args = append(args, "to", rs[:min(len(rs), maxLoggedRecipients)])
		if len(rs) > maxLoggedRecipients {
			args = append(args, "to_more", len(rs)-maxLoggedRecipients)
		}
	}
	if status != "" {
		args = append(args, "status", status)
	}
	args = append(args, o.Attrs...)
	s.log.Info("message", args...)
}
