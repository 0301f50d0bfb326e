package milter

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/textproto"
	"strings"
)

var errHeaderTooLarge = errors.New("header block over 1 MiB")

// field is one header field. value is what milters see: the text after
// the colon, without the one space that usually follows it, folding
// kept, line ends as LF. raw is the field as received (CRLF included),
// written back unchanged unless a milter changed the field.
type field struct {
	name  string
	value string
	raw   []byte
}

// header is the message's header block, in order.
type header struct {
	fields []field
}

// readHeader reads the header block and the blank line after it from br;
// what follows is the body. A message without a blank line (all
// header) is read as header up to its end; a line that is not a header
// field ends the header there, and is returned as the body's start.
func readHeader(br *bufio.Reader) (h *header, bodyStart []byte, err error) {
	h = &header{}
	size := 0
	for {
		b, err := br.Peek(1)
		if err == io.EOF || (err == nil && (b[0] == '\r' || b[0] == '\n')) {
			// The blank line (or the end): consume it.
			if err == nil {
				line, _ := br.ReadBytes('\n')
				if len(bytes.TrimRight(line, "\r\n")) != 0 {
					return h, line, nil // a line starting with CR: body
				}
			}
			return h, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		raw, err := readField(br, maxHeader-size)
		if err != nil {
			return nil, nil, err
		}
		size += len(raw)
		name, value, ok := strings.Cut(string(raw), ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			// Not a header field: the body starts here.
			return h, raw, nil
		}
		value = strings.ReplaceAll(strings.TrimRight(value, "\r\n"), "\r\n", "\n")
		value = strings.TrimPrefix(value, " ")
		h.fields = append(h.fields, field{name: name, value: value, raw: raw})
	}
}

// readField reads one field with its continuation lines.
func readField(br *bufio.Reader, limit int) ([]byte, error) {
	var raw []byte
	for {
		line, err := br.ReadBytes('\n')
		raw = append(raw, line...)
		if len(raw) > limit {
			return nil, errHeaderTooLarge
		}
		if err == io.EOF {
			return raw, nil
		}
		if err != nil {
			return nil, err
		}
		next, err := br.Peek(1)
		if err != nil || (next[0] != ' ' && next[0] != '\t') {
			return raw, nil
		}
	}
}

// add appends a field (SMFIR_ADDHEADER).
func (h *header) add(name, value string) {
	h.fields = append(h.fields, field{name: name, value: value})
}

// insert puts a field after the index-th (1-based; 0 = first)
// (SMFIR_INSHEADER).
func (h *header) insert(index int, name, value string) {
	index = min(max(index, 0), len(h.fields))
	h.fields = append(h.fields[:index], append([]field{{name: name, value: value}}, h.fields[index:]...)...)
}

// change sets the value of the index-th (1-based) field called name,
// counting case-insensitively, or deletes it for an empty value
// (SMFIR_CHGHEADER). Past the last such field, a value is added, as
// Postfix does.
func (h *header) change(index int, name, value string) {
	canon := textproto.CanonicalMIMEHeaderKey(name)
	n := 0
	for i, f := range h.fields {
		if textproto.CanonicalMIMEHeaderKey(f.name) != canon {
			continue
		}
		if n++; n == index {
			if value == "" {
				h.fields = append(h.fields[:i], h.fields[i+1:]...)
			} else {
				h.fields[i] = field{name: f.name, value: value}
			}
			return
		}
	}
	if value != "" {
		h.add(name, value)
	}
}
