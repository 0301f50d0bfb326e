package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-mail/sluice/internal/replycode"
)

// Limits on replies read from an upstream.
const (
	maxReplyLine  = 4096 // bytes per line, terminator excluded
	maxReplyLines = 512
)

// ErrBadReply is a reply that breaks the SMTP reply syntax: a line that does
// not start with three digits followed by a space, a hyphen or the end of the
// line, a code that differs from the first line's, or a reply over the
// limits. Errors from ReadReply and ParseReply wrap it.
var ErrBadReply = errors.New("wire: malformed SMTP reply")

// Reply is one complete SMTP reply.
type Reply struct {
	Code  int      // 3-digit code of the reply
	Lines []string // each complete line as received, without CRLF, e.g. "250-2.1.0 ok", "250 2.1.0 ok"
}

// ReadReply reads one complete, possibly multi-line reply: lines "NNN-..."
// until "NNN ..." or "NNN" alone. Bare LF endings are tolerated. A line may
// hold at most 4096 bytes and a reply at most 512 lines. EOF before the first
// byte gives io.EOF, EOF inside the reply io.ErrUnexpectedEOF.
func ReadReply(r *bufio.Reader) (Reply, error) {
	var rep Reply
	for {
		line, err := readReplyLine(r)
		if err != nil {
			if err == io.EOF && len(rep.Lines) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return Reply{}, err
		}
		code, final, err := parseReplyLine(line)
		if err != nil {
			return Reply{}, err
		}
		if len(rep.Lines) == 0 {
			rep.Code = code
		} else if code != rep.Code {
			return Reply{}, fmt.Errorf("%w: code %03d in a reply that began with %03d", ErrBadReply, code, rep.Code)
		}
		if len(rep.Lines) == maxReplyLines {
			return Reply{}, fmt.Errorf("%w: more than %d lines", ErrBadReply, maxReplyLines)
		}
		rep.Lines = append(rep.Lines, line)
		if final {
			return rep, nil
		}
	}
}

// readReplyLine reads one line of at most maxReplyLine bytes (terminator
// excluded) and returns it without CRLF or LF.
func readReplyLine(r *bufio.Reader) (string, error) {
	var buf []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(buf)+len(frag) > maxReplyLine+2 {
			return "", fmt.Errorf("%w: line longer than %d bytes", ErrBadReply, maxReplyLine)
		}
		if err == nil {
			if buf == nil {
				buf = frag // whole line buffered: converted to a string below, before the next read
			} else {
				buf = append(buf, frag...)
			}
			break
		}
		buf = append(buf, frag...) // a copy: frag aliases the reader's buffer
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(buf) == 0 {
				return "", io.EOF
			}
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	buf = buf[:len(buf)-1]
	if n := len(buf); n > 0 && buf[n-1] == '\r' {
		buf = buf[:n-1]
	}
	if len(buf) > maxReplyLine {
		return "", fmt.Errorf("%w: line longer than %d bytes", ErrBadReply, maxReplyLine)
	}
	return string(buf), nil
}

// parseReplyLine returns the code of one reply line and whether it is the
// last line of its reply.
func parseReplyLine(line string) (code int, final bool, err error) {
	code, final, ok := replycode.Parse(line)
	if !ok {
		return 0, false, fmt.Errorf("%w: line %q does not start with a 3-digit code and a space, a hyphen or its end", ErrBadReply, clip(line))
	}
	return code, final, nil
}

// clip shortens s for error messages.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Bytes returns the reply as it goes on the wire: the lines joined and
// terminated with CRLF.
func (r Reply) Bytes() []byte {
	n := 0
	for _, l := range r.Lines {
		n += len(l) + 2
	}
	b := make([]byte, 0, n)
	for _, l := range r.Lines {
		b = append(b, l...)
		b = append(b, '\r', '\n')
	}
	return b
}

// Class is the first digit of the code: 2 success, 3 intermediate, 4
// transient failure, 5 permanent failure.
func (r Reply) Class() int { return r.Code / 100 }

// Text is the text of the last line, after "NNN " or "NNN-".
func (r Reply) Text() string {
	if len(r.Lines) == 0 {
		return ""
	}
	l := r.Lines[len(r.Lines)-1]
	if len(l) <= 4 {
		return ""
	}
	return l[4:]
}

// String is the reply's lines joined with " | ", for logs.
func (r Reply) String() string { return strings.Join(r.Lines, " | ") }

// ParseReply parses a single-line reply such as a filter's "550 5.7.1 no".
// One trailing CRLF or LF is allowed; a continuation line ("550-..."), a
// line without a code, or a line holding NUL, CR or LF is ErrBadReply.
func ParseReply(line string) (Reply, error) {
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if strings.ContainsAny(line, "\x00\r\n") {
		return Reply{}, fmt.Errorf("%w: %q holds NUL, CR or LF", ErrBadReply, clip(line))
	}
	if len(line) > maxReplyLine {
		return Reply{}, fmt.Errorf("%w: line longer than %d bytes", ErrBadReply, maxReplyLine)
	}
	code, final, err := parseReplyLine(line)
	if err != nil {
		return Reply{}, err
	}
	if !final {
		return Reply{}, fmt.Errorf("%w: %q is a continuation line", ErrBadReply, clip(line))
	}
	return Reply{Code: code, Lines: []string{line}}, nil
}

// hiddenExtensions are the EHLO keywords never relayed to the client: the
// edge does not implement them itself (behaviour.md#ehlo).
var hiddenExtensions = [...]string{"PIPELINING", "STARTTLS", "CHUNKING", "BINARYMIME", "CHECKPOINT", "XCLIENT", "XEXCH50"}

func hidden(keyword string) bool {
	for _, h := range hiddenExtensions {
		if strings.EqualFold(keyword, h) {
			return true
		}
	}
	return false
}

// EHLOOptions are one session's changes to the upstream's extension list.
type EHLOOptions struct {
	Hide    []string // keywords not advertised to this client, besides the ones the edge never relays
	MaxSize int64    // the edge's own size limit: SIZE advertises the smaller of it and the upstream's; 0 = none
	Add     []string // extensions the edge implements itself (STARTTLS), advertised last
}

// Extensions maps the upper-cased keyword of every extension a 2xx EHLO
// reply offers to its parameters; nil for any other reply.
func Extensions(rep Reply) map[string]string {
	_, offered := FilterEHLO(rep, "", EHLOOptions{})
	return offered
}

// FilterEHLO turns the upstream's successful (2xx) EHLO reply into the reply
// for the client: the first line's text becomes host, the extensions the edge
// must not advertise (PIPELINING, STARTTLS, CHUNKING, BINARYMIME, CHECKPOINT,
// XCLIENT, XEXCH50, and o.Hide) are removed, SIZE is lowered to o.MaxSize
// when the upstream's is larger or unlimited, the others keep the
// upstream's order, and the continuation markers are rewritten so that only
// the last line has "NNN ". offered maps the upper-cased keyword of every
// extension the upstream offered, removed ones included, to its parameters
// as the upstream gave them. A reply that is not 2xx is returned unchanged
// with a nil map.
func FilterEHLO(rep Reply, host string, o EHLOOptions) (out Reply, offered map[string]string) {
	if rep.Class() != 2 || len(rep.Lines) == 0 {
		return rep, nil
	}
	code := fmt.Sprintf("%03d", rep.Code)
	offered = make(map[string]string, len(rep.Lines))
	texts := make([]string, 0, len(rep.Lines))
	texts = append(texts, host)
	for _, l := range rep.Lines[1:] {
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		kw, params := text, ""
		if i := strings.IndexAny(text, " \t"); i >= 0 {
			kw, params = text[:i], strings.TrimSpace(text[i+1:])
		}
		if kw != "" {
			offered[strings.ToUpper(kw)] = params
		}
		if hidden(kw) || slices.ContainsFunc(o.Hide, func(h string) bool { return strings.EqualFold(h, kw) }) {
			continue
		}
		if strings.EqualFold(kw, "SIZE") && o.MaxSize > 0 {
			// RFC 1870: no parameter or 0 means no fixed limit.
			if n, err := strconv.ParseInt(params, 10, 64); params == "" || err != nil || n == 0 || n > o.MaxSize {
				text = kw + " " + strconv.FormatInt(o.MaxSize, 10)
			}
		}
		texts = append(texts, text)
	}
	texts = append(texts, o.Add...)
	out = Reply{Code: rep.Code, Lines: make([]string, len(texts))}
	for i, t := range texts {
		sep := "-"
		if i == len(texts)-1 {
			sep = " "
		}
		out.Lines[i] = code + sep + t
	}
	return out, offered
}
