package session

import (
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// BenchmarkSTARTTLS is one message per session, in clear and with
// STARTTLS (a full handshake, as from a new sender), side by side in each
// iteration against a real loopback upstream, through the Pipeline seam:
// what TLS adds to the edge's cost of a message.
func BenchmarkSTARTTLS(b *testing.B) {
	server, client := tlsConfigs(b)
	pipe := &memPipeline{decide: verdict(Verdict{Action: ActionAccept, Status: "FILTERED", Filtered: true}), filtered: message}
	bd := newBed(b, smtptest.Config{}, Config{TLS: server}, pipe)
	go func() {
		for range bd.kinds { // outcomes are not what is measured
		}
	}()
	one := func(tls bool) time.Duration {
		start := time.Now()
		c := bd.dial(b)
		if tls {
			c.CmdExpect("EHLO client.test", 250)
			c.CmdLine("STARTTLS", replyStartTLS)
			c.StartTLS(client)
		}
		send(b, c, "alice@example.com", message)
		c.Expect(250)
		c.CmdExpect("QUIT", 221)
		c.Close()
		return time.Since(start)
	}
	var plain, withTLS time.Duration
	b.ResetTimer()
	for range b.N {
		plain += one(false)
		withTLS += one(true)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(plain.Microseconds())/n/1000, "ms/plain-msg")
	b.ReportMetric(float64(withTLS.Microseconds())/n/1000, "ms/starttls-msg")
	b.ReportMetric(float64(withTLS)/float64(plain), "tls/plain")
}
