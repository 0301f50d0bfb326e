package wire

import (
	"bytes"
	"regexp"
)

// Go ports of the helpers at the top of /work/shared/compat/expect.py, the
// judge of the DATA rules (behaviour.md#data), and a naive
// reference encoder for WriteData.

// dataContent is expect.py's data_content: the raw, still stuffed content of
// a DATA stream, ending at the first <CRLF>.<CRLF>, the CRLF that ended the
// DATA command counting as the first one. ok=false if there is none.
func dataContent(stream []byte) (content []byte, ok bool) {
	s := append([]byte("\r\n"), stream...)
	i := bytes.Index(s, []byte("\r\n.\r\n"))
	if i < 0 {
		return nil, false
	}
	return s[2 : i+2], true
}

var anyEOL = regexp.MustCompile(`\r\n|\r|\n`)

// normEOL is expect.py's _norm / normalise: every CRLF, CR or LF becomes CRLF.
func normEOL(b []byte) []byte { return anyEOL.ReplaceAll(b, []byte("\r\n")) }

// unstuffedVariants is expect.py's unstuffed_variants: the acceptable
// "message as it will be delivered" readings of a DATA stream. Reading 1
// (index 0) is the one DataReader implements.
func unstuffedVariants(stream []byte) [][]byte {
	c, ok := dataContent(stream)
	if !ok {
		return nil
	}
	var out [][]byte
	lines := bytes.Split(c, []byte("\r\n"))
	lines = lines[:len(lines)-1]
	var v1 []byte
	for _, l := range lines {
		if bytes.HasPrefix(l, []byte(".")) {
			l = l[1:]
		}
		v1 = append(v1, normEOL(l)...)
		v1 = append(v1, '\r', '\n')
	}
	out = append(out, v1)
	nl := bytes.Split(normEOL(c), []byte("\r\n"))
	nl = nl[:len(nl)-1]
	var v2, v3 []byte
	for _, l := range nl {
		l2, l3 := l, l
		if bytes.HasPrefix(l, []byte(".")) {
			l3 = l[1:]
			if len(l) > 1 {
				l2 = l[1:]
			}
		}
		v2 = append(append(v2, l2...), '\r', '\n')
		v3 = append(append(v3, l3...), '\r', '\n')
	}
	out = append(out, v2, v3)
	var res [][]byte
	for _, v := range out {
		dup := false
		for _, r := range res {
			dup = dup || bytes.Equal(r, v)
		}
		if !dup {
			res = append(res, v)
		}
	}
	return res
}

// stuff is expect.py's stuff: dot-stuff a CRLF-normalised message.
func stuff(text []byte) []byte {
	if len(text) == 0 {
		return text
	}
	lines := bytes.Split(text, []byte("\r\n"))
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte(".")) {
			lines[i] = append([]byte("."), l...)
		}
	}
	return bytes.Join(lines, []byte("\r\n"))
}

// bareEOL finds a CR not followed by LF or an LF not preceded by CR
// (expect.py's BARE).
func bareEOL(b []byte) int {
	for i, c := range b {
		if c == '\r' && (i+1 >= len(b) || b[i+1] != '\n') {
			return i
		}
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			return i
		}
	}
	return -1
}

// withFinalCRLF is m normalised and, unless empty, ending with CRLF: what a
// message becomes on its way through WriteData and DataReader.
func withFinalCRLF(m []byte) []byte {
	n := normEOL(m)
	if len(n) > 0 && !bytes.HasSuffix(n, []byte("\r\n")) {
		n = append(n, '\r', '\n')
	}
	return n
}

// refWriteData is a naive, line-based model of WriteData.
func refWriteData(m, header []byte, onTop bool) []byte {
	split := func(b []byte) [][]byte {
		b = withFinalCRLF(b)
		if len(b) == 0 {
			return nil
		}
		ls := bytes.Split(b, []byte("\r\n"))
		return ls[:len(ls)-1]
	}
	lines := split(m)
	if len(header) > 0 {
		h := split(header)
		at := len(lines)
		if onTop {
			at = 0
		} else {
			for i, l := range lines {
				k := 0
				for k < len(l) && isBlankSpace(l[k]) {
					k++
				}
				if k == len(l) || k > maxBlankLookahead {
					at = i
					break
				}
			}
		}
		lines = append(lines[:at:at], append(h, lines[at:]...)...)
	}
	var out []byte
	for _, l := range lines {
		if bytes.HasPrefix(l, []byte(".")) {
			out = append(out, '.')
		}
		out = append(append(out, l...), '\r', '\n')
	}
	return append(out, ".\r\n"...)
}
