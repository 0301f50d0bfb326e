package config

import (
	"github.com/sluice-mail/sluice/internal/milter"

	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// cSpace is C's isspace set: proxsmtpd trims these, not Unicode spaces.
const cSpace = " \t\n\v\f\r"

// parseCInt reads s as proxsmtpd does with strtol(s, &end, 10) and
// *end == 0: leading blanks, an optional sign, decimal digits, nothing
// after. Values beyond 32 bits are refused rather than clamped.
func parseCInt(s string) (int64, bool) {
	t := strings.TrimLeft(s, cSpace)
	neg := false
	if t != "" && (t[0] == '+' || t[0] == '-') {
		neg = t[0] == '-'
		t = t[1:]
	}
	if t == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
		if n > math.MaxInt32 {
			return 0, false
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

// parseBool accepts proxsmtpd's boolean words, case-insensitively.
func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.Trim(s, cSpace)) {
	case "1", "yes", "true", "t", "on":
		return true, true
	case "0", "no", "false", "f", "off":
		return false, true
	}
	return false, false
}

// parseDuration reads a sluice duration: Go syntax ("90s", "1h30m") or a
// plain number of seconds, never negative.
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t != "" && strings.Trim(t, "0123456789") == "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n > math.MaxInt64/int64(time.Second) {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 90s, 10m, 168h)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("must not be negative")
	}
	return d, nil
}

// parseSize reads a byte count: digits with an optional binary suffix
// K, KiB, M, MiB, G, GiB (case-insensitive; K and KiB both mean 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q (use bytes or e.g. 512K, 64MiB, 1G)", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	var mult int64
	switch strings.ToLower(strings.TrimSpace(t[i:])) {
	case "":
		mult = 1
	case "k", "kib":
		mult = 1 << 10
	case "m", "mib":
		mult = 1 << 20
	case "g", "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("invalid size %q (use bytes or e.g. 512K, 64MiB, 1G)", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return n * mult, nil
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// loopbackHostPort reports whether a checked host:port binds to loopback
// only: a loopback IP or "localhost". An empty or unspecified host
// (":4222", "0.0.0.0:4222", "[::]:4222") binds every address, and any
// other name may resolve to anything.
func loopbackHostPort(s string) bool {
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkHostPort accepts "host:port" and ":port" with a numeric port 0..65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("must be host:port: %q", s)
	}
	if strings.ContainsAny(host, cSpace) {
		return fmt.Errorf("invalid host in %q", s)
	}
	if _, ok := parsePort(port, true); !ok {
		return fmt.Errorf("invalid port in %q", s)
	}
	return nil
}

// parsePort accepts 1..65535 (0 too when zeroOK), digits only.
func parsePort(s string, zeroOK bool) (int, bool) {
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, _ := strconv.Atoi(s)
	if n > 65535 || (n == 0 && !zeroOK) {
		return 0, false
	}
	return n, true
}

// checkNATSURL accepts what nats.go dials: nats, tls, ws or wss URLs with
// a host; a bare host:port is taken as nats://host:port by nats.go too.
func checkNATSURL(s string) error {
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL %q", s)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("unsupported scheme in %q (use nats://, tls://, ws:// or wss://)", s)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("no host in %q", s)
	}
	if p := u.Port(); p != "" {
		if _, ok := parsePort(p, false); !ok {
			return fmt.Errorf("invalid port in %q", s)
		}
	}
	return nil
}

// checkSubject accepts a NATS subject without wildcards.
func checkSubject(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return fmt.Errorf("invalid subject %q: empty token", s)
		}
		if tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return fmt.Errorf("invalid subject %q: no wildcards or blanks", s)
		}
	}
	return nil
}

// checkName accepts a JetStream stream or consumer name.
func checkName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > 255 || strings.ContainsAny(s, " \t\r\n.*>/\\") {
		return fmt.Errorf("invalid name %q: no blanks, '.', '*', '>', '/' or '\\'", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return fmt.Errorf("invalid name %q: control character", s)
		}
	}
	return nil
}

// subjectsOverlap reports whether one subject is the other or a token
// prefix of it, so verdict replies could land in the job stream.
func subjectsOverlap(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}

// checkBucket applies S3's bucket naming rules.
func checkBucket(s string) error {
	if len(s) < 3 || len(s) > 63 {
		return fmt.Errorf("invalid bucket name %q: 3 to 63 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return fmt.Errorf("invalid bucket name %q: lower-case letters, digits, '.' and '-' only", s)
		}
	}
	if !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) || strings.Contains(s, "..") {
		return fmt.Errorf("invalid bucket name %q", s)
	}
	return nil
}

// checkEndpoint accepts "host" or "host:port", without scheme or path:
// minio-go takes the scheme from store.s3.tls.
func checkEndpoint(s string) error {
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@ \t") {
		return fmt.Errorf("must be host or host:port without scheme or path (TLS is store.s3.tls): %q", s)
	}
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		if _, ok := parsePort(p, false); !ok {
			return fmt.Errorf("invalid port in %q", s)
		}
		host = h
	}
	if host == "" {
		return fmt.Errorf("no host in %q", s)
	}
	return nil
}

// checkHostname accepts a name fit for the SMTP greeting: printable, no blanks.
func checkHostname(s string) error {
	if s == "" || len(s) > 255 {
		return fmt.Errorf("invalid host name %q", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("invalid host name %q", s)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// parsePrefix reads a network as "addr/bits" or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid network %q (want CIDR such as 192.0.2.0/24)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid network %q (want CIDR such as 192.0.2.0/24)", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// checkMilter accepts one of Postfix's milter addresses.
func checkMilter(s string) error {
	_, _, err := milter.ParseAddress(s)
	return err
}

// checkEnvPattern accepts an environment variable name, or a prefix
// followed by '*'.
func checkEnvPattern(s string) error {
	name := strings.TrimSuffix(s, "*")
	if name == "" && s != "*" {
		return fmt.Errorf("empty variable name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(isAlnum(c) || c == '_') {
			return fmt.Errorf("invalid variable name %q", s)
		}
	}
	return nil
}
