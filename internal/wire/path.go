package wire

import (
	"errors"
	"strings"
)

// MaxPath is the longest address accepted in MAIL FROM and RCPT TO, without
// the angle brackets: RFC 5321 4.5.3.1.3 allows 256 octets with them. It
// also bounds what one recipient adds to a filter job.
const MaxPath = 254

var (
	// ErrPathSyntax: the argument is not "FROM:" (or "TO:") followed by an
	// address and ESMTP parameters. The edge answers 501 5.5.4.
	ErrPathSyntax = errors.New("wire: syntax error in MAIL or RCPT argument")
	// ErrAddrSyntax: the address itself is malformed (unbalanced brackets
	// or quotes, whitespace or brackets where RFC 5321 has none). The edge
	// answers 501 5.1.7 or 5.1.3.
	ErrAddrSyntax = errors.New("wire: bad address syntax")
	// ErrAddrTooLong: the address is longer than MaxPath.
	ErrAddrTooLong = errors.New("wire: address too long")
)

// Path is the argument of a MAIL FROM: or RCPT TO: command, parsed strictly
// enough that the edge and the upstream cannot read two different
// envelopes from it: whatever is ambiguous is an error, and the edge
// relays Arg, rebuilt from what it understood, rather than the client's
// text.
type Path struct {
	Addr   string   // as the filter sees it: "<>" for the null path; no brackets, no source route
	Params []string // ESMTP parameters, KEYWORD or KEYWORD=value, as written

	prefix    string // "FROM:" or "TO:" as the client wrote it
	bracketed bool
}

// ParseMail parses the argument of MAIL (after the verb): "FROM:<addr>
// PARAMS". Spaces after the colon are allowed, and so is an address
// without brackets, whose parameters then follow it (behaviour.md#envelope).
func ParseMail(arg string) (Path, error) { return parsePath(arg, "FROM:") }

// ParseRcpt parses the argument of RCPT: "TO:<addr> PARAMS".
func ParseRcpt(arg string) (Path, error) { return parsePath(arg, "TO:") }

// WithAddr is p for another address (in brackets), without the SIZE
// parameter, which declared the size of another message: the MAIL the
// edge sends for an envelope a milter changed.
func (p Path) WithAddr(addr string) Path {
	p.Addr, p.bracketed = addr, true
	var params []string
	for _, param := range p.Params {
		if name, _, _ := strings.Cut(param, "="); !strings.EqualFold(name, "SIZE") {
			params = append(params, param)
		}
	}
	p.Params = params
	return p
}

// Arg is the argument as the edge relays it: the prefix as the client
// wrote it, the address (in brackets unless the client used none), and
// the parameters separated by single spaces.
func (p Path) Arg() string {
	var b strings.Builder
	b.WriteString(p.prefix)
	switch {
	case p.Addr == "<>":
		b.WriteString("<>")
	case p.bracketed:
		b.WriteString("<" + p.Addr + ">")
	default:
		b.WriteString(p.Addr)
	}
	for _, param := range p.Params {
		b.WriteString(" " + param)
	}
	return b.String()
}

// Param returns the value of the ESMTP parameter keyword, matched without
// regard to case ("" for a parameter without a value), and whether it is
// there.
func (p Path) Param(keyword string) (string, bool) {
	for _, param := range p.Params {
		k, v, _ := strings.Cut(param, "=")
		if strings.EqualFold(k, keyword) {
			return v, true
		}
	}
	return "", false
}

func parsePath(arg, prefix string) (Path, error) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return Path{}, ErrPathSyntax
	}
	p := Path{prefix: arg[:len(prefix)]}
	rest := strings.TrimLeft(arg[len(prefix):], " \t")
	var raw string
	switch {
	case rest == "":
		return Path{}, ErrPathSyntax
	case rest[0] == '<':
		end, err := closingBracket(rest)
		if err != nil {
			return Path{}, err
		}
		raw, rest = rest[1:end], rest[end+1:]
		if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
			return Path{}, ErrAddrSyntax // "<a@b>x", "<a@b>,<c@d>"
		}
		p.bracketed = true
	default:
		raw, rest = rest, ""
		if i := strings.IndexAny(raw, " \t"); i >= 0 {
			raw, rest = raw[:i], raw[i:]
		}
		if strings.ContainsAny(raw, "<>") {
			return Path{}, ErrAddrSyntax
		}
	}
	addr, err := mailbox(raw)
	if err != nil {
		return Path{}, err
	}
	p.Addr = addr
	for _, param := range strings.Fields(rest) {
		if !validParam(param) {
			return Path{}, ErrPathSyntax
		}
		p.Params = append(p.Params, param)
	}
	return p, nil
}

// closingBracket returns the index of the '>' that closes the '<' at
// s[0]. Inside a quoted string anything goes but an unescaped quote;
// outside, whitespace and another '<' are errors: Postfix and the edge
// could split such a path differently.
func closingBracket(s string) (int, error) {
	if t := strings.TrimLeft(s[1:], " \t"); strings.HasPrefix(t, ">") {
		return len(s) - len(t), nil // "<>" or "< >": the null path
	}
	quoted := false
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\':
			i++ // the escaped character, whatever it is
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '>':
			return i, nil
		case c == '<', c == ' ', c == '\t':
			return 0, ErrAddrSyntax
		}
	}
	return 0, ErrAddrSyntax
}

// mailbox checks an address (without brackets) and drops its source
// route ("@a,@b:user@c" is "user@c", RFC 5321 4.1.1.3 says to ignore it,
// and Postfix does). An empty or blank address is the null path "<>".
func mailbox(raw string) (string, error) {
	if strings.Trim(raw, " \t") == "" {
		return "<>", nil
	}
	if len(raw) > MaxPath {
		return "", ErrAddrTooLong
	}
	if hasControl(raw) {
		return "", ErrAddrSyntax
	}
	if raw[0] == '@' {
		i := strings.IndexByte(raw, ':')
		if i < 0 || !validRoute(raw[:i]) {
			return "", ErrAddrSyntax
		}
		if raw = raw[i+1:]; raw == "" {
			return "", ErrAddrSyntax
		}
	}
	local, domain, err := splitMailbox(raw)
	if err != nil {
		return "", err
	}
	if local == "" || (domain == "" && strings.HasSuffix(raw, "@")) {
		return "", ErrAddrSyntax
	}
	if domain != "" && !validDomain(domain) {
		return "", ErrAddrSyntax
	}
	return raw, nil
}

// splitMailbox splits at the '@' after the local part, which is a quoted
// string or a dot-string. A local part alone ("postmaster") is allowed:
// the upstream qualifies it.
func splitMailbox(s string) (local, domain string, err error) {
	i := 0
	if s[0] == '"' {
		for i = 1; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				i++
			}
		}
		if i >= len(s) {
			return "", "", ErrAddrSyntax
		}
		i++
	} else {
		for i < len(s) && isAtext(s[i]) {
			i++
		}
	}
	local = s[:i]
	switch {
	case i == len(s):
		return local, "", nil
	case s[i] != '@':
		return "", "", ErrAddrSyntax
	}
	return local, s[i+1:], nil
}

// isAtext is RFC 5322 atext plus '.', and any byte of a UTF-8 sequence
// (SMTPUTF8). Control characters never get this far: command lines holding
// them are refused whole.
func isAtext(c byte) bool {
	return isAlnum(c) || c >= 0x80 || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0
}

// validDomain accepts host names (with '_' and UTF-8, as real mail has
// them) and address literals "[...]".
func validDomain(d string) bool {
	if d[0] == '[' {
		if len(d) < 3 || d[len(d)-1] != ']' {
			return false
		}
		return strings.IndexFunc(d[1:len(d)-1], func(r rune) bool {
			return r <= ' ' || r == '[' || r == ']' || r == '\\' || r == 0x7f
		}) < 0
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; !isAlnum(c) && c < 0x80 && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

// validRoute accepts "@domain" or "@domain,@domain,...".
func validRoute(r string) bool {
	for _, hop := range strings.Split(r, ",") {
		if len(hop) < 2 || hop[0] != '@' || !validDomain(hop[1:]) {
			return false
		}
	}
	return true
}

// validParam is RFC 5321's esmtp-param, with UTF-8 allowed in the value
// (RFC 6531): a keyword of letters, digits and '-', optionally '=' and a
// value without '=', spaces or control characters.
func validParam(s string) bool {
	k, v, hasValue := strings.Cut(s, "=")
	if k == "" || !isAlnum(k[0]) {
		return false
	}
	for i := 1; i < len(k); i++ {
		if !isAlnum(k[i]) && k[i] != '-' {
			return false
		}
	}
	if !hasValue {
		return true
	}
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '=' || c == 0x7f {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
