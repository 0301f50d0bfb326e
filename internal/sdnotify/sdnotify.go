// Package sdnotify tells systemd how a Type=notify service is doing
// (sd_notify(3)): READY=1 once it serves, STOPPING=1 when it drains. It
// writes one datagram to $NOTIFY_SOCKET and does nothing without it.
package sdnotify

import (
	"net"
	"os"
)

// Notify sends state ("READY=1", "STOPPING=1", "STATUS=...", several
// separated by newlines) to the service manager, if there is one.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
