package replay

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/s3test"
	"github.com/sluice-mail/sluice/internal/smtptest"
)

// The mix the end-to-end test sends through an edge whose filter is
// classify: delivered, rejected, dropped, tempfailed, delivered.
var mixMails = []mail{
	{"hello", "alice@example.com", []string{"bob@example.com"}, "Subject: hello\r\n\r\nhi\r\n"},
	{"offer", "spammer@bad.example", []string{"bob@example.com", "carol@example.org"}, "Subject: offer\r\n\r\nREJECTME\r\n"},
	{"bounce", "", []string{"carol@example.org"}, "Subject: bounce\r\n\r\nDROPME\r\n"},
	{"busy", "alice@example.com", []string{"dave@example.org"}, "Subject: busy\r\n\r\nLATER\r\n"},
	{"reply", "bob@example.com", []string{"alice@example.com"}, "Subject: reply\r\n\r\nthanks\r\n"},
}

// newRules is filter B: it refuses what says "hi" and stamps the rest.
const newRules = `body=$(cat; echo x)
case "$body" in *hi*) echo "550 5.7.1 Now spam" >&2; exit 1;; esac
printf 'X-New: 1\r\n%s' "${body%x}"
`

// End to end, on both stores: mail goes through a real edge with filter
// A, then is replayed through filter B here and on a worker pool, and the
// report rows are exactly what B would have done. On the pool, the
// workers also release what B accepts that A refused (--deliver-to).
func TestReplayEndToEnd(t *testing.T) {
	for _, st := range []string{"fs", "s3"} {
		t.Run(st, func(t *testing.T) {
			var conf []string
			if st == "s3" {
				s3 := s3test.Start(t)
				conf = []string{"store.s3.endpoint: " + s3.Endpoint, "store.s3.bucket: replay-e2e",
					"store.s3.access_key: " + s3.AccessKey, "store.s3.secret_key: " + s3.SecretKey,
					"store.s3.create_bucket: on", "store.s3.tls: off"}
			}
			codes := map[string]int{"hello": 250, "offer": 550, "bounce": 250, "busy": 451, "reply": 250}
			cfg, ids, _ := populateWith(t, mixMails, script(t, "classify.sh", classify), "pipe",
				func(m mail) int { return codes[m.name] }, conf...)
			if string(cfg.Store.Type) != st {
				t.Fatalf("store %s, want %s", cfg.Store.Type, st)
			}
			store := openTestStore(t, cfg)
			rules := script(t, "rules.sh", newRules)
			now := time.Now()
			want := map[string]string{
				"hello":  `from=alice@example.com to=1 accept -> reject "550 5.7.1 Now spam" changed`,
				"offer":  `from=spammer@bad.example to=2 reject "550 5.7.1 Spam" -> accept changed`,
				"bounce": `from=<> to=1 drop "250 2.0.0 Dropped" -> accept changed`,
				"busy":   `from=alice@example.com to=1 reject "451 4.7.1 Later" -> accept changed`,
				"reply":  `from=bob@example.com to=1 accept -> accept changed content=changed`,
			}
			check := func(t *testing.T, how string, rs []Result, sum Summary, released bool) {
				t.Helper()
				var got []string
				for _, r := range rs {
					name := ""
					for n, id := range ids {
						if id == r.ID {
							name = n
						}
					}
					line := strings.TrimPrefix(TextLine(r), r.Day+" "+r.ID+" ")
					got = append(got, line)
					w := want[name]
					if released && (name == "offer" || name == "bounce") {
						// The released ones: what the sink said.
						w += " delivered: " + r.Delivery.Reply
						if !strings.HasPrefix(r.Delivery.Reply, "250 2.0.0 upstream: queued as ") {
							t.Errorf("%s: %s: delivery %+v", how, name, r.Delivery)
						}
					}
					if line != w || r.Subject != name {
						t.Errorf("%s: %s (subject %q): %q, want %q", how, name, r.Subject, line, want[name])
					}
				}
				if len(got) != 5 || sum.Changed != 5 || sum.AcceptToReject != 1 || sum.RejectToAccept != 2 ||
					sum.ActionChanged != 1 || sum.ContentChanged != 1 || !sum.Complete || sum.Errors != 0 {
					t.Errorf("%s: summary %+v", how, sum)
				}
			}

			// Here.
			var local []Result
			sum, err := Run(context.Background(), Options{Store: store, Since: now.AddDate(0, 0, -1), Until: now,
				Filter: filter.Command{Command: rules, Timeout: 30 * time.Second, TempDir: t.TempDir()}, Timeout: 30 * time.Second},
				func(r Result) error { local = append(local, r); return nil })
			if err != nil {
				t.Fatal(err)
			}
			check(t, "local", local, sum, false)

			// On a pool of two workers, releasing to a sink.
			ns := embeddedNATS(t)
			startWorkers(t, ns, openTestStore(t, cfg), "e2e", 2)
			sink := smtptest.NewServer(t, smtptest.Config{})
			q := dial(t, ns)
			p, err := OpenPool(context.Background(), q.Conn(), q.JetStream(), "e2e", FilterSpec{Command: rules, TimeoutMS: 30000}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			var pooled []Result
			rctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			sum, err = Run(rctx, Options{Store: store, Since: now.AddDate(0, 0, -1), Until: now, Pool: p,
				Timeout: 30 * time.Second, Concurrency: 8, DeliverTo: &Deliverer{Addr: sink.Addr()}},
				func(r Result) error { pooled = append(pooled, r); return nil })
			if err != nil {
				t.Fatal(err)
			}
			check(t, "pool", pooled, sum, true)
			if sum.Delivered != 2 {
				t.Errorf("pool: %d released, want 2 (offer and bounce)", sum.Delivered)
			}
			var subjects []string
			for _, m := range sink.Messages() {
				if !strings.HasPrefix(string(m.Data), "X-New: 1\r\nSubject: ") {
					t.Errorf("released as %q", m.Data)
				}
				subjects = append(subjects, strings.SplitN(strings.TrimPrefix(string(m.Data), "X-New: 1\r\nSubject: "), "\r\n", 2)[0])
			}
			slices.Sort(subjects)
			if !slices.Equal(subjects, []string{"bounce", "offer"}) {
				t.Errorf("released %v, want bounce and offer", subjects)
			}
		})
	}
}
