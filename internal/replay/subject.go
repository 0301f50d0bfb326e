package replay

import (
	"bufio"
	"context"
	"io"
	"mime"
	"net/textproto"
	"strings"
	"unicode/utf8"

	"github.com/sluice-mail/sluice/internal/blob"
)

// maxHeaderRead bounds how much of a message subject reads: the header
// section of ordinary mail fits many times over.
const maxHeaderRead = 256 << 10

// maxSubject bounds the subject kept for the report, in bytes.
const maxSubject = 300

// subject is the stored message's Subject, decoded and on one line, or ""
// when there is none or it cannot be read: the report only shows it.
func (r *runner) subject(ctx context.Context, m entry) string {
	rc, err := r.store.Get(ctx, m.dir+"/"+blob.MessageName)
	if err != nil {
		return ""
	}
	defer rc.Close()
	return Subject(io.LimitReader(rc, maxHeaderRead))
}

// Subject reads a message's header section and returns its Subject,
// decoded (RFC 2047 encoded words in UTF-8, ISO-8859-1 or US-ASCII; others
// are left as they are), unfolded, on one line and at most maxSubject
// bytes of valid UTF-8.
func Subject(msg io.Reader) string {
	h, err := textproto.NewReader(bufio.NewReader(msg)).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return ""
	}
	raw := h.Get("Subject")
	dec := new(mime.WordDecoder)
	s, err := dec.DecodeHeader(raw)
	if err != nil {
		s = raw
	}
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\r' || r == '\n' || r < ' ' || r == 0x7f
	}), " ")
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxSubject {
		cut := maxSubject
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
