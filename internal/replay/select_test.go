package replay

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/xid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/worker"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// classify is filter A of the mix: a word in the body decides.
const classify = `body=$(cat; echo x)
case "$body" in
*REJECTME*) echo "550 5.7.1 Spam" >&2; exit 1;;
*DROPME*) echo "250 2.0.0 Dropped" >&2; exit 1;;
*LATER*) echo "451 4.7.1 Later" >&2; exit 1;;
esac
printf '%s' "${body%x}"
`

// stored is one message of a mix, as the edge and a worker left it.
type stored struct {
	name     string // and its Subject
	received time.Duration
	from     string
	to       []string
	words    string
}

// mix is five messages over three days: accepted, rejected, dropped,
// tempfailed and accepted again by classify.
var mix = []stored{
	{"hello", 1 * time.Hour, "alice@example.com", []string{"bob@example.com"}, "hi"},
	{"offer", 2 * time.Hour, "spammer@bad.example", []string{"bob@example.com", "carol@example.org"}, "REJECTME"},
	{"bounce", 25 * time.Hour, "<>", []string{"carol@example.org"}, "DROPME"},
	{"busy", 26 * time.Hour, "alice@example.com", []string{"Dave@Example.ORG"}, "LATER"},
	{"reply", 49 * time.Hour, "bob@example.com", []string{"alice@example.com"}, "thanks"},
}

// storeMix stores the mix in a new FS store the way an edge and a
// worker do (the real worker runs classify), starting at day0, midnight
// two days ago, and returns the store, day0 and each message's id by
// name.
func storeMix(t *testing.T) (store blob.Store, day0 time.Time, ids map[string]string) {
	t.Helper()
	store, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	day0 = dayOf(time.Now()).AddDate(0, 0, -2)
	w := &worker.Worker{ID: "test", Store: store,
		Filter: filter.Command{Command: script(t, "classify.sh", classify), Timeout: 30 * time.Second, TempDir: t.TempDir()}}
	ctx := context.Background()
	ids = map[string]string{}
	for _, m := range mix {
		received := day0.Add(m.received)
		id := xid.NewWithTime(received).String()
		ids[m.name] = id
		key := func(name string) string { return blob.Key(id, received, name) }
		body := "Subject: " + m.name + "\r\n\r\n" + m.words + "\r\n"
		if _, err := store.Put(ctx, key(blob.MessageName), strings.NewReader(body), -1); err != nil {
			t.Fatal(err)
		}
		from := m.from
		job := &sluicev1.FilterJob{MessageId: id, MessageKey: key(blob.MessageName), FilteredKey: key(blob.FilteredName),
			RecordKey: key(blob.RecordName), Sender: &from, Recipients: m.to, ClientAddr: "127.0.0.1",
			Received: timestamppb.New(received), MessageSize: int64(len(body))}
		w.Handle(ctx, job, 1)
	}
	return store, day0, ids
}

func TestSelection(t *testing.T) {
	store, day0, ids := storeMix(t)
	names := map[string]string{}
	for n, id := range ids {
		names[id] = n
	}
	cat := filter.Command{Command: "cat", Timeout: 30 * time.Second, TempDir: t.TempDir()}
	run := func(t *testing.T, sel Selection, limit int) ([]string, Summary) {
		t.Helper()
		var got []string
		sum, err := Run(context.Background(), Options{Store: store, Filter: cat, Since: day0, Until: day0.AddDate(0, 0, 2),
			Select: sel, Concurrency: 2, Limit: limit}, func(r Result) error {
			n := names[r.ID]
			if n == "" {
				n = r.ID
			}
			got = append(got, n)
			return nil
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		return got, sum
	}
	for _, c := range []struct {
		name string
		sel  Selection
		want []string
	}{
		{"all", Selection{}, []string{"hello", "offer", "bounce", "busy", "reply"}},
		{"time range", Selection{After: day0.Add(90 * time.Minute), Before: day0.Add(25*time.Hour + 30*time.Minute)}, []string{"offer", "bounce"}},
		{"before is exclusive", Selection{Before: day0.Add(2 * time.Hour)}, []string{"hello"}},
		{"ids in the order given", Selection{IDs: []string{ids["busy"], ids["hello"]}}, []string{"busy", "hello"}},
		{"outcomes", Selection{Outcomes: []string{"rejected", "drop"}}, []string{"offer", "bounce"}},
		{"delivered", Selection{Outcomes: []string{"delivered"}}, []string{"hello", "reply"}},
		{"tempfailed", Selection{Outcomes: []string{"tempfailed"}}, []string{"busy"}},
		{"sender glob", Selection{From: []string{"*@EXAMPLE.com"}}, []string{"hello", "busy", "reply"}},
		{"null sender", Selection{From: []string{"<>"}}, []string{"bounce"}},
		{"recipient glob, any recipient, any case", Selection{To: []string{"*@example.org"}}, []string{"offer", "bounce", "busy"}},
		{"all criteria must match", Selection{From: []string{"alice@*"}, Outcomes: []string{"accept", "tempfail"}, To: []string{"d*"}}, []string{"busy"}},
		{"nothing", Selection{From: []string{"nobody@*"}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, sum := run(t, c.sel, 0)
			if !slices.Equal(got, c.want) {
				t.Errorf("selected %v, want %v", got, c.want)
			}
			if !sum.Complete || sum.Messages != len(c.want) {
				t.Errorf("summary %+v", sum)
			}
		})
	}

	t.Run("an unknown id is an error result", func(t *testing.T) {
		unknown := xid.NewWithTime(day0.Add(time.Hour)).String()
		got, sum := run(t, Selection{IDs: []string{unknown, ids["reply"]}}, 0)
		if !slices.Equal(got, []string{unknown, "reply"}) || sum.Errors != 1 || sum.Same != 1 {
			t.Errorf("got %v, summary %+v", got, sum)
		}
	})
	t.Run("sample", func(t *testing.T) {
		a, _ := run(t, Selection{Sample: 0.5}, 0)
		b, _ := run(t, Selection{Sample: 0.5}, 0)
		if !slices.Equal(a, b) {
			t.Errorf("two samples differ: %v and %v", a, b)
		}
		// The share holds over many ids.
		c, _ := Selection{Sample: 0.1}.compile()
		kept := 0
		for i := range 20000 {
			if c.sampled(fmt.Sprintf("id%06d", i)) {
				kept++
			}
		}
		if kept < 1700 || kept > 2300 {
			t.Errorf("a 10%% sample kept %d of 20000", kept)
		}
	})
	t.Run("limit leaves the run incomplete", func(t *testing.T) {
		got, sum := run(t, Selection{}, 2)
		if len(got) != 2 || sum.Complete || sum.Stopped != "--limit 2 reached" || sum.Listed != 5 {
			t.Errorf("got %v, summary %+v", got, sum)
		}
	})
	t.Run("report fields", func(t *testing.T) {
		rejectAll := filter.Command{Command: `cat >/dev/null; echo "550 5.7.1 No" >&2; exit 1`, Timeout: 30 * time.Second, TempDir: t.TempDir()}
		var rs []Result
		_, err := Run(context.Background(), Options{Store: store, Filter: rejectAll, Since: day0, Until: day0,
			Select: Selection{IDs: []string{ids["hello"]}}}, func(r Result) error { rs = append(rs, r); return nil })
		if err != nil || len(rs) != 1 {
			t.Fatalf("Run: %v, %d results", err, len(rs))
		}
		r := rs[0]
		if r.Subject != "hello" || r.FirstTo != "bob@example.com" || r.Received != day0.Add(time.Hour).Format(time.RFC3339Nano) ||
			r.OldMS <= 0 || r.NewMS <= 0 || r.Change != ChangeAcceptReject {
			t.Errorf("%+v", r)
		}
	})
}

func TestSelectionErrors(t *testing.T) {
	for _, c := range []struct {
		sel  Selection
		want string
	}{
		{Selection{IDs: []string{"msga"}}, "not a message id"},
		{Selection{Outcomes: []string{"bounced"}}, "unknown outcome"},
		{Selection{From: []string{"[a-"}}, "invalid address pattern"},
		{Selection{Sample: 1.5}, "invalid sample"},
		{Selection{After: time.Unix(100, 0), Before: time.Unix(100, 0)}, "the time range is empty"},
	} {
		_, err := c.sel.compile()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.sel, err, c.want)
		}
	}
}

// --deliver-to releases what the new filter accepts that was rejected or
// dropped before, with its original envelope and as the new filter left
// it; a tempfailed message was retried by its sender and stays.
func TestDeliverTo(t *testing.T) {
	store, day0, ids := storeMix(t)
	sink := smtptest.NewServer(t, smtptest.Config{})
	stamp := filter.Command{Command: `printf 'X-Replayed: yes\r\n'; cat`, Timeout: 30 * time.Second, TempDir: t.TempDir()}
	var rs []Result
	sum, err := Run(context.Background(), Options{Store: store, Filter: stamp, Since: day0, Until: day0.AddDate(0, 0, 2),
		DeliverTo: &Deliverer{Addr: sink.Addr(), HelloName: "replay.test"}, TempDir: t.TempDir()},
		func(r Result) error { rs = append(rs, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if sum.Delivered != 2 || sum.DeliveryFailed != 0 || !sum.Complete {
		t.Errorf("summary %+v", sum)
	}
	for _, r := range rs {
		released := r.ID == ids["offer"] || r.ID == ids["bounce"]
		if (r.Delivery != nil) != released {
			t.Errorf("%s: delivery %+v, released %v", r.ID, r.Delivery, released)
		}
		if released && !strings.HasPrefix(r.Delivery.Reply, "250 ") {
			t.Errorf("%s: delivery %+v", r.ID, r.Delivery)
		}
	}
	msgs := sink.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages delivered, want 2", len(msgs))
	}
	if m := msgs[0]; !strings.HasPrefix(m.Mail, "<spammer@bad.example>") ||
		!slices.Equal(m.Rcpts, []string{"<bob@example.com>", "<carol@example.org>"}) ||
		string(m.Data) != "X-Replayed: yes\r\nSubject: offer\r\n\r\nREJECTME\r\n" {
		t.Errorf("offer delivered as %q %q %q", m.Mail, m.Rcpts, m.Data)
	}
	if m := msgs[1]; !strings.HasPrefix(m.Mail, "<> ") || !slices.Equal(m.Rcpts, []string{"<carol@example.org>"}) {
		t.Errorf("bounce delivered as %q %q", m.Mail, m.Rcpts)
	}

	// A server that refuses a recipient: nothing delivered, the reason
	// reported, counted as failed.
	refuse := smtptest.NewServer(t, smtptest.Config{Rules: []smtptest.Rule{{Match: "(?i)^RCPT TO:<carol", Reply: []string{"550 5.1.1 No such user"}}}})
	rs = nil
	sum, err = Run(context.Background(), Options{Store: store, Filter: stamp, Since: day0, Until: day0.AddDate(0, 0, 2),
		Select:    Selection{IDs: []string{ids["offer"]}},
		DeliverTo: &Deliverer{Addr: refuse.Addr()}, TempDir: t.TempDir()},
		func(r Result) error { rs = append(rs, r); return nil })
	if err != nil || sum.DeliveryFailed != 1 || len(rs) != 1 || rs[0].Delivery == nil ||
		!strings.Contains(rs[0].Delivery.Error, "550 5.1.1 No such user") {
		t.Errorf("refused: %v %+v %+v", err, sum, rs)
	}
	if n := len(refuse.Messages()); n != 0 {
		t.Errorf("%d messages delivered to a server that refused a recipient", n)
	}
}
