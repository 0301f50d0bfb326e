//go:build !linux

package edge

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

var errNoTransparent = errors.New("TransparentProxy needs Linux's netfilter")

func originalDst(net.Conn) (netip.AddrPort, error) { return netip.AddrPort{}, errNoTransparent }

func setTransparent(string, syscall.RawConn) error { return errNoTransparent }
