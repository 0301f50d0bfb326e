package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Address is a Listen or OutAddress value.
type Address struct {
	Network string // "tcp" or "unix"
	Host    string // IP address or host name; "" for a port alone
	Port    int    // 1..65535 for "tcp"
	Path    string // socket path for "unix"
}

// unixPathMax is sun_path's size on Linux less the terminating NUL.
const unixPathMax = 107

// ParseAddress reads proxsmtpd's address forms: "ip:port", "host:port",
// "[v6]:port", a host or IP alone (defaultPort), a port alone (see
// PortOnly) and "/path" for a Unix socket. A host name is checked for
// syntax only; it is resolved when connecting, as proxsmtpd does for
// every connection.
func ParseAddress(s string, defaultPort int) (Address, error) {
	switch {
	case s == "":
		return Address{}, errors.New("empty address")
	case s[0] == '/':
		if len(s) > unixPathMax {
			return Address{}, fmt.Errorf("socket path longer than %d bytes", unixPathMax)
		}
		if strings.IndexByte(s, 0) >= 0 {
			return Address{}, errors.New("NUL in socket path")
		}
		return Address{Network: "unix", Path: s}, nil
	case strings.Trim(s, "0123456789") == "":
		p, ok := parsePort(s, false)
		if !ok {
			return Address{}, fmt.Errorf("invalid port %q", s)
		}
		return Address{Network: "tcp", Port: p}, nil
	}

	host, portText := s, ""
	switch {
	case s[0] == '[':
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Address{}, fmt.Errorf("missing ']' in %q", s)
		}
		host = s[1:end]
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			portText = rest[1:]
			if portText == "" {
				return Address{}, fmt.Errorf("missing port in %q", s)
			}
		default:
			return Address{}, fmt.Errorf("unexpected %q after ']'", rest)
		}
		if !isIPv6(host) {
			return Address{}, fmt.Errorf("invalid IPv6 address %q", host)
		}
	case strings.Count(s, ":") > 1:
		// A bare IPv6 address: no port can be told apart from it.
		if !isIPv6(s) {
			return Address{}, fmt.Errorf("invalid address %q", s)
		}
	default:
		if i := strings.IndexByte(s, ':'); i >= 0 {
			host, portText = s[:i], s[i+1:]
			if portText == "" {
				return Address{}, fmt.Errorf("missing port in %q", s)
			}
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if !a.Is4() {
				return Address{}, fmt.Errorf("invalid address %q", s)
			}
		} else if !validHostname(host) {
			return Address{}, fmt.Errorf("invalid host name %q", host)
		}
	}

	port := defaultPort
	if portText != "" {
		p, ok := parsePort(portText, false)
		if !ok {
			return Address{}, fmt.Errorf("invalid port %q", portText)
		}
		port = p
	}
	return Address{Network: "tcp", Host: host, Port: port}, nil
}

// PortOnly reports an OutAddress given as a port alone: proxsmtpd then
// connects to the client's own IP address at that port.
func (a Address) PortOnly() bool {
	return a.Network == "tcp" && a.Host == ""
}

// String gives the address back in the form ParseAddress reads.
func (a Address) String() string {
	switch {
	case a.Network == "unix":
		return a.Path
	case a.Host == "":
		return strconv.Itoa(a.Port)
	}
	return net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
}

// isIPv6 accepts an IPv6 address with an optional zone of plain characters
// (so String's brackets always read back).
func isIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return false
	}
	for _, c := range []byte(a.Zone()) {
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// validHostname checks DNS name syntax: labels of letters, digits, '-'
// and '_' up to 63 bytes, 253 in all, an optional final dot, and a last
// label that is not all digits (so "1.2.3.4.5" is no name).
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' && l[i] != '_' {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}
