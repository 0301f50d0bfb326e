// Package wire is the SMTP wire format as the edge needs it: command lines,
// replies, the EHLO extension list, MAIL/RCPT paths, XFORWARD attributes, and
// the DATA transparency codec in both directions (RFC 5321 4.5.2). It is a
// pure codec: no network, no goroutines; callers hand it bufio.Readers and
// io.Writers.
package wire

import (
	"bufio"
	"errors"
	"io"
)

// MaxLine is the longest command line accepted, in bytes including the line
// terminator. Longer lines get a 500 (proxsmtpd's limit, behaviour.md#commands).
const MaxLine = 4221

var (
	// ErrLineTooLong: the line exceeded MaxLine. The rest of the line was
	// consumed; the caller answers 500 and continues.
	ErrLineTooLong = errors.New("wire: command line too long")
	// ErrBadLine: the line held a control character other than a tab
	// (NUL, a CR not followed by LF, ESC, DEL ...). It was consumed whole;
	// the caller answers 500 (behaviour.md#commands). No command needs one, and an upstream
	// could read them differently from the edge.
	ErrBadLine = errors.New("wire: command line holds a control character")
)

// ReadLine reads one command line ended by CRLF or a bare LF and returns it
// without the terminator.
//
// A line longer than MaxLine is consumed up to and including its LF and
// reported as ErrLineTooLong; a line with a control character other than
// a tab (a NUL, a CR that is not immediately followed by LF) is consumed
// whole and reported as ErrBadLine.
// EOF before any byte gives io.EOF, EOF inside a line io.ErrUnexpectedEOF;
// other read errors are returned as they are. At most MaxLine bytes are held
// however long the line is.
func ReadLine(r *bufio.Reader) (string, error) {
	frag, err := r.ReadSlice('\n')
	if err == nil {
		// Common case: the whole line was already buffered.
		if len(frag) > MaxLine {
			return "", ErrLineTooLong
		}
		return checkLine(frag)
	}
	var buf []byte
	total := 0
	tooLong := false
	for {
		total += len(frag)
		if !tooLong {
			if total > MaxLine {
				tooLong = true
				buf = nil
			} else {
				if buf == nil {
					buf = make([]byte, 0, MaxLine)
				}
				buf = append(buf, frag...)
			}
		}
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				if total == 0 {
					return "", io.EOF
				}
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		frag, err = r.ReadSlice('\n')
	}
	if tooLong {
		return "", ErrLineTooLong
	}
	return checkLine(buf)
}

// checkLine strips the terminator of a complete line (ending in LF) and
// rejects NUL and bare CR.
func checkLine(b []byte) (string, error) {
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	for _, c := range b {
		if isControl(c) && c != '\t' {
			return "", ErrBadLine
		}
	}
	return string(b), nil
}
