// Package e2e holds sluice's own end-to-end tests: the real edge, started
// in process from a proxsmtpd.conf, with its embedded NATS server, blob
// store and workers running real /bin/sh filters, between a scripted SMTP
// client and a recording upstream (internal/smtptest), all on 127.0.0.1.
//
// The tests are dialog tables, one small case per protocol edge, grouped
// by area: connection, commands, envelope, data, filter, header, xclient,
// auth, timing and shutdown; FuzzSession drives the whole session state
// machine with arbitrary client bytes. Each case names the behaviour it
// shows: a section of docs/behaviour.md, or an older B-number or "Do
// better" item, which that file's last table maps to its section.
package e2e
