package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/sluice-mail/sluice/internal/config"
)

// TransparentProxy (behaviour.md#transparent): the edge sits in the path
// of SMTP traffic that a firewall sends to it, and delivers each
// connection where its client meant it to go instead of to OutAddress.
// With "client" the upstream sees the edge's address; with "full" the
// upstream connection leaves from the client's own address, so neither
// side sees the edge in the packet headers.

// listenerFor is how the edge opens its listeners: for TransparentProxy
// full with IP_TRANSPARENT, so that connections TPROXY diverts to it,
// addressed to other hosts, are accepted.
func listenerFor(cfg *config.Config) func(config.Address) (net.Listener, error) {
	if cfg.TransparentProxy != config.TransparentFull {
		return listen
	}
	return func(a config.Address) (net.Listener, error) {
		if a.Network == "unix" {
			return listen(a)
		}
		lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
			if err := setTransparent(network, c); err != nil {
				return fmt.Errorf("couldn't set transparent mode on socket: %w", err)
			}
			return nil
		}}
		return lc.Listen(context.Background(), tcpNetwork(a.Host), net.JoinHostPort(a.Host, strconv.Itoa(a.Port)))
	}
}

// errLoop is a connection whose original destination is the edge itself:
// a client that connected to the edge directly rather than being
// redirected to it.
var errLoop = errors.New("loop detected in transparent proxying")

// transparentDest is where c's client meant to connect, and the dialer
// that goes there: from the edge's own address for "client", from the
// client's for "full". c is the accepted connection, before any TLS.
func (e *Edge) transparentDest(c net.Conn) (string, *net.Dialer, error) {
	d := &net.Dialer{Timeout: e.cfg.TimeOut}
	dst, err := originalDst(c)
	if err != nil {
		if e.cfg.TransparentProxy != config.TransparentFull {
			return "", nil, fmt.Errorf("couldn't get source address for transparent proxying: %w", err)
		}
		// TPROXY does not rewrite the destination: without a
		// connection-tracking entry the socket's own address is it.
		if dst, err = netip.ParseAddrPort(c.LocalAddr().String()); err != nil {
			return "", nil, fmt.Errorf("couldn't get source address for transparent proxying: %w", err)
		}
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if e.isOwnListener(dst) {
		return "", nil, errLoop
	}
	if e.cfg.TransparentProxy == config.TransparentFull {
		client, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			return "", nil, fmt.Errorf("couldn't set source of transparent connection to: %s: %w", c.RemoteAddr(), err)
		}
		// Port 0: the kernel picks one, so that the edge's connection
		// never collides with the client's own on the way back.
		d.LocalAddr = &net.TCPAddr{IP: client.Addr().Unmap().AsSlice()}
		d.Control = func(network, _ string, rc syscall.RawConn) error {
			if err := setTransparent(network, rc); err != nil {
				return fmt.Errorf("couldn't set transparent mode on connection: %w", err)
			}
			return nil
		}
	}
	return dst.String(), d, nil
}

// isOwnListener reports whether dst is one of the edge's listeners: an
// address of this host at a port the edge listens on.
func (e *Edge) isOwnListener(dst netip.AddrPort) bool {
	own := false
	for _, ln := range []net.Listener{e.ln, e.implicitLn} {
		if ln == nil {
			continue
		}
		if a, ok := ln.Addr().(*net.TCPAddr); ok && a.Port == int(dst.Port()) {
			own = true
		}
	}
	if !own {
		return false
	}
	if dst.Addr().IsLoopback() || dst.Addr().IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap() == dst.Addr() {
				return true
			}
		}
	}
	return false
}
