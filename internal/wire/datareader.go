package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

var (
	// ErrTooBig: the message exceeded the DataReader's maximum size. The
	// caller calls Discard to read the rest.
	ErrTooBig = errors.New("wire: message exceeds the size limit")
	// ErrBareLineEnding: a bare CR or LF was seen and the DataReader rejects
	// them. The caller calls Discard to read the rest.
	ErrBareLineEnding = errors.New("wire: bare CR or LF in message data")
	// ErrNUL: a NUL byte was seen and the DataReader rejects them. The
	// caller calls Discard to read the rest.
	ErrNUL = errors.New("wire: NUL byte in message data")
)

// dstate is where the decoder stands in the raw DATA stream.
type dstate uint8

const (
	dLineStart dstate = iota // after a raw CRLF (or at the start)
	dMid                     // inside a raw line
	dCR                      // after a CR inside a line: CRLF or bare CR?
	dDot                     // after a '.' that began a raw line (already dropped)
	dDotCR                   // after ".\r" at the start of a raw line
	dDone                    // "<CRLF>.<CRLF>" consumed
)

// DataReader decodes the DATA stream a client sends after its DATA command
// into the message as it will be delivered: dot-stuffing removed and every
// line ending CRLF (behaviour.md#data).
//
// The end of data is only "." alone on a raw line that follows a CRLF, the
// CRLF that ended the DATA command counting as the first one, so ".\r\n"
// right after DATA is an empty message (behaviour.md#data). "\n.\n", "\n.\r\n", "\r\n.\n"
// and "\r.\r" are content. A raw line (the stream split at CRLF only) that
// starts with '.' loses that dot. A bare LF or bare CR is written as CRLF, or,
// if the reader rejects them, makes Read fail with ErrBareLineEnding.
//
// DataReader streams: it holds nothing beyond the bufio.Reader's buffer and
// two pending bytes, however long the lines.
type DataReader struct {
	r          *bufio.Reader
	max        int64
	rejectBare bool
	rejectNUL  bool

	state      dstate
	size       int64
	bare       int
	err        error // sticky
	discarding bool
	pend       [2]byte // output owed to the caller (half of a CRLF)
	npend      int
}

// NewDataReader returns a DataReader reading the raw stream from r, which
// must be positioned just after the DATA command line. maxSize limits the
// decoded size (0: no limit); rejectBare makes a bare CR or LF an error
// instead of normalising it.
func NewDataReader(r *bufio.Reader, maxSize int64, rejectBare bool) *DataReader {
	return &DataReader{r: r, max: maxSize, rejectBare: rejectBare}
}

// RejectNUL makes a NUL byte in the message an error (ErrNUL) instead of
// content.
func (d *DataReader) RejectNUL() { d.rejectNUL = true }

// Read yields the decoded message, then io.EOF once the terminating
// "<CRLF>.<CRLF>" has been consumed. It returns ErrTooBig when the decoded
// size would exceed the limit, ErrBareLineEnding on the first bare CR/LF
// and ErrNUL on the first NUL when those are rejected (after any of these
// the caller calls Discard), read
// errors as they are, and io.ErrUnexpectedEOF if the stream ends before the
// terminator. Errors are sticky.
func (d *DataReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	q, limited := p, false
	if d.max > 0 {
		// Decode at most one byte beyond the limit to tell "exactly at the
		// limit, then the end" from "over the limit".
		if room := d.max - d.size; room < int64(len(p)) {
			q, limited = p[:room+1], true
		}
	}
	n, err := d.decode(q)
	room := d.max - d.size
	d.size += int64(n)
	if limited && int64(n) > room {
		n, err = int(room), ErrTooBig
	}
	if d.rejectNUL {
		if i := bytes.IndexByte(p[:n], 0); i >= 0 {
			n, err = i, ErrNUL
		}
	}
	if err != nil {
		d.err = err
	}
	return n, err
}

// Discard reads and drops the rest of the message up to and including the
// terminator, ignoring the size limit, bare line endings and NULs. It
// returns nil once the terminator has been consumed; after ErrTooBig,
// ErrBareLineEnding or ErrNUL it is how the caller gets back in step with
// the client.
func (d *DataReader) Discard() error {
	if d.state == dDone {
		return nil
	}
	if d.err != nil && d.err != ErrTooBig && d.err != ErrBareLineEnding && d.err != ErrNUL {
		return d.err
	}
	d.err, d.discarding = nil, true
	var scratch [4096]byte
	for {
		n, err := d.decode(scratch[:])
		d.size += int64(n)
		if err == io.EOF {
			d.err = io.EOF
			return nil
		}
		if err != nil {
			d.err = err
			return err
		}
	}
}

// Size is the number of decoded bytes so far (including those Discard
// dropped).
func (d *DataReader) Size() int64 { return d.size }

// BareLineEndings is the number of bare CRs and LFs seen so far.
func (d *DataReader) BareLineEndings() int { return d.bare }

// decode is the state machine. It fills p (plus at most the two pending
// bytes) and returns early, rather than blocking, once it has produced
// something and the bufio.Reader has nothing more buffered.
func (d *DataReader) decode(p []byte) (n int, err error) {
	for n < len(p) {
		if d.npend > 0 {
			k := copy(p[n:], d.pend[2-d.npend:])
			d.npend -= k
			n += k
			continue
		}
		if d.state == dDone {
			return n, io.EOF
		}
		if n > 0 && d.r.Buffered() == 0 {
			return n, nil
		}
		buf, err := d.peek()
		if err != nil {
			return n, err
		}
		switch d.state {
		case dMid:
			if room := len(p) - n; len(buf) > room {
				buf = buf[:room]
			}
			i := scanDecode(buf)
			copy(p[n:], buf[:i])
			n += i
			if i == len(buf) {
				d.r.Discard(i)
				continue
			}
			c := buf[i]
			d.r.Discard(i + 1)
			if c == '\r' {
				d.state = dCR
				continue
			}
			// A bare LF: still inside the raw line (raw lines end at CRLF only).
			if err := d.bareEnding(); err != nil {
				return n, err
			}
			n = d.emitCRLF(p, n)
		case dCR:
			if buf[0] == '\n' {
				d.r.Discard(1)
				d.state = dLineStart
				n = d.emitCRLF(p, n)
				continue
			}
			d.state = dMid // bare CR; the byte after it is left for dMid
			if err := d.bareEnding(); err != nil {
				return n, err
			}
			n = d.emitCRLF(p, n)
		case dLineStart:
			if buf[0] == '.' {
				d.r.Discard(1)
				d.state = dDot
			} else {
				d.state = dMid
			}
		case dDot:
			if buf[0] == '\r' {
				d.r.Discard(1)
				d.state = dDotCR
			} else {
				d.state = dMid // the stuffing dot stays dropped
			}
		case dDotCR:
			if buf[0] == '\n' {
				d.r.Discard(1)
				d.state = dDone
				return n, io.EOF
			}
			d.state = dMid // ".\r" + x: the dot was stuffing, the CR is bare
			if err := d.bareEnding(); err != nil {
				return n, err
			}
			n = d.emitCRLF(p, n)
		}
	}
	return n, nil
}

// peek returns the buffered bytes, reading more if none are buffered. A
// stream that ends before the terminator is io.ErrUnexpectedEOF.
func (d *DataReader) peek() ([]byte, error) {
	if d.r.Buffered() == 0 {
		if _, err := d.r.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	b, _ := d.r.Peek(d.r.Buffered())
	return b, nil
}

func (d *DataReader) bareEnding() error {
	d.bare++
	if d.rejectBare && !d.discarding {
		return ErrBareLineEnding
	}
	return nil
}

// emitCRLF writes CRLF at p[n:], keeping what does not fit for later.
func (d *DataReader) emitCRLF(p []byte, n int) int {
	k := copy(p[n:], "\r\n")
	if k < 2 {
		d.pend = [2]byte{'\r', '\n'}
		d.npend = 2 - k
	}
	return n + k
}

// scanDecode returns the length of the prefix of b that passes through the
// decoder unchanged from the dMid state: bytes other than CR and LF, and
// CRLF pairs followed (within b) by a byte other than '.', which would be a
// stuffing dot or the terminator.
func scanDecode(b []byte) int {
	i := 0
	for {
		j := indexCRLF(b[i:])
		if j < 0 {
			return len(b)
		}
		k := i + j
		if b[k] == '\r' && k+2 < len(b) && b[k+1] == '\n' && b[k+2] != '.' {
			i = k + 2
			continue
		}
		return k
	}
}

// indexCRLF is the index of the first CR or LF in b, or -1. Vectorised
// IndexByte scans beat IndexAny's byte loop; the window, doubling from 128
// bytes, keeps a distant CR from being rescanned for every LF-ended line.
func indexCRLF(b []byte) int {
	w := 128
	for off := 0; off < len(b); w *= 2 {
		seg := b[off:min(off+w, len(b))]
		if i := bytes.IndexByte(seg, '\r'); i >= 0 {
			if j := bytes.IndexByte(seg[:i], '\n'); j >= 0 {
				return off + j
			}
			return off + i
		}
		if j := bytes.IndexByte(seg, '\n'); j >= 0 {
			return off + j
		}
		off += len(seg)
	}
	return -1
}
