package wire

import (
	"bufio"
	"fmt"
	"io"
)

// DataWriterOptions says where WriteData puts a header.
type DataWriterOptions struct {
	Header      []byte // CRLF-terminated header lines to add, or nil
	HeaderOnTop bool   // Header goes before the first line (a Received: header), not at the end of the header block
}

// estate is where the encoder stands in the message.
type estate uint8

const (
	eLineStart estate = iota // at the start of a line
	eMid                     // inside a line
	eCR                      // after a CR: CRLF or bare CR?
	eBlank                   // header pending; the line so far is whitespace, held in ws
)

// maxBlankLookahead bounds the whitespace held while deciding whether a line
// is blank (the end of the header block). A line with more leading
// whitespace than this is treated as the blank line.
const maxBlankLookahead = 4096

const ioBuf = 32 << 10

// WriteData copies the message from r to w in SMTP transparency (RFC 5321
// 4.5.2) and ends it with ".\r\n": bare CR and bare LF become CRLF (filters
// may emit LF-only output, behaviour.md#delivery), every line starting with '.' gets another
// '.' (behaviour.md#data, #delivery), and a final CRLF is added if the message does not end
// with one (an empty message stays empty).
//
// o.Header, if set, is written before the first line when o.HeaderOnTop,
// otherwise right before the first line that is empty or whitespace-only
// (the end of the header block; at the top if the message starts with one),
// or after the last line when there is no such line (behaviour.md#header). The
// header is normalised and stuffed like content.
//
// It streams with bounded buffers and returns the number of bytes written to
// w. On a read error the terminator is not written: the data phase is broken
// and the caller must drop the connection rather than let the upstream
// accept a truncated message.
func WriteData(w io.Writer, r io.Reader, o DataWriterOptions) (int64, error) {
	cw := &countingWriter{w: w}
	e := &encoder{w: bufio.NewWriterSize(cw, ioBuf), header: o.Header, headerPending: len(o.Header) > 0}
	if e.headerPending && o.HeaderOnTop {
		e.writeHeader()
	}
	buf := make([]byte, ioBuf)
	for e.err == nil {
		n, err := r.Read(buf)
		if n > 0 {
			e.encode(buf[:n])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return cw.n, fmt.Errorf("wire: reading message: %w", err)
		}
	}
	e.finish()
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err != nil {
		return cw.n, fmt.Errorf("wire: writing message: %w", e.err)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type encoder struct {
	w             *bufio.Writer
	err           error // first write error
	state         estate
	header        []byte
	headerPending bool
	ws            []byte // leading whitespace of a possibly blank line
}

func (e *encoder) write(b []byte) {
	if e.err == nil && len(b) > 0 {
		_, e.err = e.w.Write(b)
	}
}

func (e *encoder) writeString(s string) {
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
	}
}

func (e *encoder) encode(b []byte) {
	for len(b) > 0 && e.err == nil {
		switch e.state {
		case eMid:
			i := scanEncode(b, e.headerPending)
			e.write(b[:i])
			b = b[i:]
			if len(b) == 0 {
				return
			}
			c := b[0]
			b = b[1:]
			if c == '\r' {
				e.state = eCR
				continue
			}
			e.writeString("\r\n") // bare LF
			e.state = eLineStart
		case eCR:
			if b[0] == '\n' {
				b = b[1:]
			} // else a bare CR: the byte after it starts the next line
			e.writeString("\r\n")
			e.state = eLineStart
		case eLineStart:
			c := b[0]
			if e.headerPending {
				switch {
				case isBlankSpace(c):
					e.ws = append(e.ws[:0], c)
					b = b[1:]
					e.state = eBlank
					continue
				case c == '\r' || c == '\n':
					e.writeHeader() // an empty line ends the header block
					e.state = eMid
					continue
				}
			}
			if c == '.' {
				e.writeString(".")
			}
			e.state = eMid
		case eBlank:
			c := b[0]
			if isBlankSpace(c) && len(e.ws) < maxBlankLookahead {
				e.ws = append(e.ws, c)
				b = b[1:]
				continue
			}
			if !isBlankSpace(c) && c != '\r' && c != '\n' {
				// Not blank after all: the line is ordinary content.
				e.write(e.ws)
				e.state = eMid
				continue
			}
			e.writeHeader()
			e.write(e.ws)
			e.state = eMid
		}
	}
}

// finish ends the last line and the header logic, then writes the terminator.
func (e *encoder) finish() {
	switch e.state {
	case eMid, eCR:
		e.writeString("\r\n")
	case eBlank:
		// A whitespace-only last line is the blank line.
		e.writeHeader()
		e.write(e.ws)
		e.writeString("\r\n")
	}
	e.state = eLineStart
	if e.headerPending {
		e.writeHeader() // no blank line: after the last line (or alone)
	}
	e.writeString(".\r\n")
}

// writeHeader writes the header at a line start, normalised and stuffed.
func (e *encoder) writeHeader() {
	e.headerPending = false
	h := e.header
	for len(h) > 0 { // each turn starts a line
		if h[0] == '.' {
			e.writeString(".")
		}
		i := indexCRLF(h)
		if i < 0 {
			e.write(h)
			e.writeString("\r\n")
			return
		}
		e.write(h[:i])
		e.writeString("\r\n")
		if h[i] == '\r' && i+1 < len(h) && h[i+1] == '\n' {
			i++
		}
		h = h[i+1:]
	}
}

// isBlankSpace reports the whitespace a "blank" line may hold besides its
// line ending (C isspace minus CR and LF, as proxsmtpd's is_blank_line).
func isBlankSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\v' || c == '\f' }

// scanEncode returns the length of the prefix of b that the encoder copies
// as it is from the eMid state: bytes other than CR and LF, and CRLF pairs
// followed (within b) by a byte that starts an ordinary line: not '.', and,
// while the header is pending, not a possible blank line.
func scanEncode(b []byte, headerPending bool) int {
	i := 0
	for {
		j := indexCRLF(b[i:])
		if j < 0 {
			return len(b)
		}
		k := i + j
		if b[k] == '\r' && k+2 < len(b) && b[k+1] == '\n' {
			c := b[k+2]
			if c != '.' && !(headerPending && (isBlankSpace(c) || c == '\r' || c == '\n')) {
				i = k + 2
				continue
			}
		}
		return k
	}
}
