package replay

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The HTML report (--html FILE) is one page that needs nothing but itself:
// its style, its script, its data and its chart are inline, and its
// Content-Security-Policy forbids the browser every fetch, so it can be
// mailed around or opened from an air-gapped disk. It is built from the
// same results as the text and JSON reports, one at a time (see HTML.Add),
// with memory bounded by what the page shows rather than by the run's
// size: counts per time bucket, the filter durations as float32s, and the
// changed and error messages for the table.
//
// The senders, recipients, subjects and replies in it come from the mail
// and so from strangers. The page is written with html/template, the table
// data travels as JSON in a <script type="application/json"> element
// (html/template escapes "<" there, so "</script>" cannot end it), and the
// page's script builds the table with textContent only.

// HTMLMeta describes the run at the head of the HTML report.
type HTMLMeta struct {
	Title  string // the page's title; "" means "Replay report"
	Filter string // the filter tried, as the operator gave it
	// Selection describes the messages chosen within the days (see
	// Selection.String); "" for all of them.
	Selection string
	// Since and Until are the first and last day replayed; only their
	// dates count. Zero when unknown.
	Since, Until time.Time
	// Started and Finished are when the run began and ended; zero when
	// unknown.
	Started, Finished time.Time
	// MaxRows bounds the changed and error messages kept for the table, as
	// a filter that changes every verdict would otherwise keep the whole
	// run in memory; the page says how many were left out. 0 means
	// DefaultHTMLMaxRows, below 0 no bound.
	MaxRows int
}

// DefaultHTMLMaxRows is how many changed and error messages the HTML
// report's table holds unless HTMLMeta.MaxRows says otherwise.
const DefaultHTMLMaxRows = 50000

// htmlMaxText bounds each text of a table row (subject, reply, reason),
// in runes: the table is for finding messages, not for reading them.
const htmlMaxText = 1000

// htmlMaxCounts is how many time buckets HTML keeps counts for before it
// merges them into coarser ones (minutes into hours into days).
const htmlMaxCounts = 20000

// htmlChartBuckets is the most bars the chart draws.
const htmlChartBuckets = 200

// htmlKind is a kind of change as the page shows it.
type htmlKind struct {
	Change Change
	Key    string // its Summary field's JSON name, for the page's test ids
	Label  string
	Class  string // its colour in the page's style
}

// htmlKinds are the kinds of change in the order of the summary, the
// chart's stacks and the table's select.
var htmlKinds = [...]htmlKind{
	{ChangeAcceptReject, "accept_to_reject", "accept → reject", "k-ar"},
	{ChangeRejectAccept, "reject_to_accept", "reject → accept", "k-ra"},
	{ChangeAction, "other_action_changed", "other action", "k-act"},
	{ChangeReply, "reply_changed", "reply", "k-reply"},
	{ChangeContent, "content_changed", "content", "k-content"},
}

// htmlErrorKind is what the table calls an error row.
const htmlErrorKind = "error"

// htmlCounts is what one time bucket counts.
type htmlCounts struct {
	Messages int
	Errors   int
	Changes  [len(htmlKinds)]int
}

func (c *htmlCounts) add(o *htmlCounts) {
	c.Messages += o.Messages
	c.Errors += o.Errors
	for i := range c.Changes {
		c.Changes[i] += o.Changes[i]
	}
}

func (c *htmlCounts) changed() int {
	n := 0
	for _, v := range c.Changes {
		n += v
	}
	return n
}

// htmlRow is a changed or error message as the page's table has it; the
// short JSON names keep a big table's page small.
type htmlRow struct {
	Received string `json:"t"` // RFC 3339, UTC; "" when unknown
	Day      string `json:"d"`
	ID       string `json:"id"`
	From     string `json:"f"` // "<>" for the null sender, "" when no MAIL
	To       int    `json:"n"` // recipients
	FirstTo  string `json:"r"`
	Subject  string `json:"s"`
	Old      string `json:"oa"` // action; "" when the record failed
	OldReply string `json:"or"`
	New      string `json:"na"` // action, or "error"
	NewReply string `json:"nr"`
	Kind     string `json:"k"` // the Change, or "error"
	Note     string `json:"x"` // the error, the new run's detail, the content
}

func newHTMLRow(r Result) htmlRow {
	row := htmlRow{
		Received: r.Received,
		Day:      r.Day,
		ID:       r.ID,
		To:       r.To,
		FirstTo:  clip(r.FirstTo),
		Subject:  clip(r.Subject),
		Kind:     string(r.Change),
	}
	if r.From != nil {
		row.From = clip(*r.From)
	}
	if r.Old != nil {
		row.Old, row.OldReply = r.Old.Action, clip(r.Old.Reply)
	}
	if r.New != nil {
		row.New, row.NewReply = r.New.Action, clip(r.New.Reply)
	}
	var note []string
	if r.Status == StatusError {
		row.Kind = htmlErrorKind
		if r.New == nil {
			row.New = htmlErrorKind
		}
		note = append(note, r.Reason)
	}
	if r.Detail != "" {
		note = append(note, r.Detail)
	}
	if r.Content != "" && r.Content != ContentSame {
		note = append(note, "content "+r.Content)
	}
	row.Note = clip(strings.Join(note, "; "))
	return row
}

// clip cuts s to htmlMaxText runes.
func clip(s string) string {
	if len(s) <= htmlMaxText || utf8.RuneCountInString(s) <= htmlMaxText {
		return s
	}
	n := 0
	for i := range s {
		if n == htmlMaxText {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// HTML collects a run's results for the HTML report and writes it. Give
// it every result, in any order, with Add (from one goroutine: it does no
// locking), then call Write with the run's summary.
type HTML struct {
	meta    HTMLMeta
	rows    []htmlRow // changed and error messages, up to the bound
	dropped int       // changed and error messages past the bound
	// counts are per bucket of base seconds, by the bucket's start (Unix
	// seconds), from the results' Received times.
	counts  map[int64]*htmlCounts
	base    int64
	undated int // results without a usable Received time
	// oldMS and newMS are the known filter durations, in milliseconds;
	// float32 keeps a million messages in 8 MB.
	oldMS, newMS []float32
}

// NewHTML starts an HTML report of a run.
func NewHTML(meta HTMLMeta) *HTML {
	if meta.MaxRows == 0 {
		meta.MaxRows = DefaultHTMLMaxRows
	}
	return &HTML{meta: meta, counts: make(map[int64]*htmlCounts), base: 60}
}

// Finished records when the run ended, for the page's header.
func (h *HTML) Finished(t time.Time) { h.meta.Finished = t }

// Add takes one result into the report: a changed or error message whole
// (up to HTMLMeta.MaxRows), any other only as counts and durations.
func (h *HTML) Add(r Result) {
	if ms := r.OldMS; ms > 0 && !math.IsInf(ms, 0) {
		h.oldMS = append(h.oldMS, float32(ms))
	}
	if ms := r.NewMS; ms > 0 && !math.IsInf(ms, 0) {
		h.newMS = append(h.newMS, float32(ms))
	}
	if r.Status == StatusChanged || r.Status == StatusError {
		if h.meta.MaxRows < 0 || len(h.rows) < h.meta.MaxRows {
			h.rows = append(h.rows, newHTMLRow(r))
		} else {
			h.dropped++
		}
	}
	t, err := time.Parse(time.RFC3339Nano, r.Received)
	if err != nil {
		h.undated++
		return
	}
	c := h.bucket(t.Unix())
	c.Messages++
	switch r.Status {
	case StatusError:
		c.Errors++
	case StatusChanged:
		for i, k := range htmlKinds {
			if k.Change == r.Change {
				c.Changes[i]++
			}
		}
	}
}

// bucket returns the counts of the base bucket that holds the second
// sec, merging the buckets into coarser ones when there are too many.
func (h *HTML) bucket(sec int64) *htmlCounts {
	key := floorDiv(sec, h.base) * h.base
	c := h.counts[key]
	if c != nil {
		return c
	}
	if len(h.counts) >= htmlMaxCounts && h.base < 86400 {
		h.coarsen()
		return h.bucket(sec)
	}
	c = new(htmlCounts)
	h.counts[key] = c
	return c
}

// coarsen merges the counts into buckets of the next base: minutes into
// hours, hours into days.
func (h *HTML) coarsen() {
	if h.base < 3600 {
		h.base = 3600
	} else {
		h.base = 86400
	}
	merged := make(map[int64]*htmlCounts, len(h.counts)/8)
	for k, c := range h.counts {
		k = floorDiv(k, h.base) * h.base
		if m := merged[k]; m != nil {
			m.add(c)
		} else {
			merged[k] = c
		}
	}
	h.counts = merged
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// htmlSteps are the chart's bucket widths to choose from, in seconds.
var htmlSteps = []int64{
	60, 120, 300, 600, 900, 1800, // minutes
	3600, 7200, 10800, 21600, 43200, // hours
	86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, // days
}

// htmlBucket is one bar of the chart.
type htmlBucket struct {
	Start time.Time
	htmlCounts
}

// chartBuckets spreads the counts over at most htmlChartBuckets buckets
// of one step, the finest that fits the time range seen, from its first
// bucket to its last with the empty ones between.
func (h *HTML) chartBuckets() (step time.Duration, out []htmlBucket) {
	if len(h.counts) == 0 {
		return 0, nil
	}
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for k := range h.counts {
		first, last = min(first, k), max(last, k)
	}
	span := last - first
	var st int64
	for _, s := range htmlSteps {
		if s%h.base == 0 && s >= h.base && (floorDiv(last, s)-floorDiv(first, s)) < htmlChartBuckets {
			st = s
			break
		}
	}
	if st == 0 { // over 15 years: whole days
		days := span/86400/(htmlChartBuckets-1) + 1
		st = days * 86400
	}
	first = floorDiv(first, st) * st
	n := (floorDiv(last, st)*st-first)/st + 1
	out = make([]htmlBucket, n)
	for i := range out {
		out[i].Start = time.Unix(first+int64(i)*st, 0).UTC()
	}
	for k, c := range h.counts {
		out[(floorDiv(k, st)*st-first)/st].add(c)
	}
	return time.Duration(st) * time.Second, out
}

// htmlDurations are the percentiles of one side's filter durations, in
// milliseconds, by the nearest-rank method.
type htmlDurations struct {
	N                                  int
	P50, P90, P99, Max                 float64
	P50Text, P90Text, P99Text, MaxText string // as the page shows them
}

// durations sorts v (in place) and takes its percentiles.
func durations(v []float32) htmlDurations {
	slices.Sort(v)
	d := htmlDurations{N: len(v)}
	if d.N == 0 {
		d.P50Text, d.P90Text, d.P99Text, d.MaxText = "–", "–", "–", "–"
		return d
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(d.N))) - 1
		return float64(v[min(max(i, 0), d.N-1)])
	}
	d.P50, d.P90, d.P99, d.Max = rank(0.50), rank(0.90), rank(0.99), float64(v[d.N-1])
	d.P50Text, d.P90Text, d.P99Text, d.MaxText = formatMS(d.P50), formatMS(d.P90), formatMS(d.P99), formatMS(d.Max)
	return d
}

// formatMS shows a duration in milliseconds with three or so significant
// digits.
func formatMS(ms float64) string {
	prec := 3
	switch {
	case ms >= 100:
		prec = 0
	case ms >= 10:
		prec = 1
	case ms >= 1:
		prec = 2
	}
	return strconv.FormatFloat(ms, 'f', prec, 64)
}

// Write writes the report's page, with s as the summary: s's counts are
// the ones shown, the collected results give the chart, the durations and
// the table. It may be called more than once.
func (h *HTML) Write(w io.Writer, s Summary) error {
	p := htmlPage{
		Meta:    h.meta,
		Sum:     s,
		Rows:    len(h.rows),
		Dropped: h.dropped,
		Undated: h.undated,
		Data:    htmlData{Rows: h.rows},
		Script:  template.JS(htmlScript),
		Style:   template.CSS(htmlStyle),
		CSP:     htmlCSP,
	}
	if p.Meta.Title == "" {
		p.Meta.Title = "Replay report"
	}
	if p.Data.Rows == nil {
		p.Data.Rows = []htmlRow{}
	}
	p.Cards = []htmlCard{
		{"messages", "messages", s.Messages, ""},
		{"same", "same", s.Same, ""},
		{"changed", "changed", s.Changed, "changed"},
	}
	kindCounts := [len(htmlKinds)]int{s.AcceptToReject, s.RejectToAccept, s.ActionChanged, s.ReplyChanged, s.ContentChanged}
	for i, k := range htmlKinds {
		p.Cards = append(p.Cards, htmlCard{k.Key, k.Label, kindCounts[i], k.Class})
		p.Kinds = append(p.Kinds, htmlOption{string(k.Change), k.Label, kindCounts[i], k.Class})
	}
	p.Kinds = append(p.Kinds, htmlOption{htmlErrorKind, "errors", s.Errors, "k-error"})
	p.Cards = append(p.Cards,
		htmlCard{"skipped", "skipped", s.Skipped, ""},
		htmlCard{"errors", "errors", s.Errors, "k-error"},
		htmlCard{"listed", "listed", s.Listed, ""},
	)
	p.Old, p.New = durations(h.oldMS), durations(h.newMS)
	if !h.meta.Since.IsZero() {
		p.Days = h.meta.Since.UTC().Format(DayLayout)
		if u := h.meta.Until.UTC().Format(DayLayout); !h.meta.Until.IsZero() && u != p.Days {
			p.Days += " to " + u
		}
	}
	if !h.meta.Started.IsZero() {
		p.Started = h.meta.Started.UTC().Format("2006-01-02 15:04:05 UTC")
		if !h.meta.Finished.IsZero() {
			p.Took = h.meta.Finished.Sub(h.meta.Started).Round(time.Second).String()
		}
	}
	step, buckets := h.chartBuckets()
	p.Chart = drawChart(step, buckets)
	if err := htmlTemplate.Execute(w, &p); err != nil {
		return fmt.Errorf("replay: html report: %w", err)
	}
	return nil
}

// htmlPage is what the page's template reads.
type htmlPage struct {
	Meta          HTMLMeta
	Days, Started string
	Took          string
	Sum           Summary
	Cards         []htmlCard
	Kinds         []htmlOption
	Old, New      htmlDurations
	Chart         *htmlChart
	Rows, Dropped int
	Undated       int
	Data          htmlData
	Script        template.JS
	Style         template.CSS
	CSP           string
}

type htmlCard struct {
	Key, Label string // Key: the Summary field's JSON name
	N          int
	Class      string
}

type htmlOption struct {
	Value, Label string
	N            int
	Class        string
}

// htmlData is the JSON the page's script reads.
type htmlData struct {
	Rows []htmlRow `json:"rows"`
}

// The chart is an SVG drawn here rather than by the page's script, so it
// shows even with scripts off: bars of changes per bucket stacked by kind
// (errors on top) against the left axis, and a line of the messages per
// bucket against the right one.
const (
	chartW, chartH             = 960.0, 260.0
	chartLeft, chartRight      = 48.0, 56.0
	chartTop, chartBottom      = 14.0, 36.0
	chartPlotW                 = chartW - chartLeft - chartRight
	chartPlotH                 = chartH - chartTop - chartBottom
	chartLabels                = 8 // x axis labels, about
	chartBarFill               = 0.8
	chartMinBar                = 1.0
	chartMaxBar                = 40.0
	chartTimeLayoutDay         = "Jan 2"
	chartTimeLayoutMinute      = "Jan 2 15:04"
	chartTooltipLayout         = "2006-01-02 15:04"
	chartTooltipLayoutDayStart = "2006-01-02"
)

type htmlChart struct {
	W, H, Left, Right, Top, Bottom float64
	PlotH                          float64
	Step                           string // the bucket width, in words
	Bars                           []chartBar
	Line                           string // polyline points of the messages
	YTicks                         []chartTick
	XTicks                         []chartTick
	Messages, Changed, Errors      int
}

type chartBar struct {
	Start                     string // RFC 3339
	Messages, Changed, Errors int
	Title                     string // the tooltip
	X, W                      string
	Rects                     []chartRect // bottom up
}

type chartRect struct {
	Y, H  string
	Class string
}

type chartTick struct {
	Pos         string // x or y
	Left, Right string // labels: for y ticks, changes and messages
	Label       string
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// niceCeil is the smallest of 1, 2, 5 times a power of ten that is at
// least n (and at least 1).
func niceCeil(n int) int {
	if n <= 1 {
		return 1
	}
	for mag := 1; ; mag *= 10 {
		for _, m := range []int{1, 2, 5} {
			if m*mag >= n {
				return m * mag
			}
		}
	}
}

func drawChart(step time.Duration, buckets []htmlBucket) *htmlChart {
	if len(buckets) == 0 {
		return nil
	}
	c := &htmlChart{W: chartW, H: chartH, Left: chartLeft, Right: chartW - chartRight,
		Top: chartTop, Bottom: chartTop + chartPlotH, PlotH: chartPlotH, Step: stepText(step)}
	maxStack, maxMsgs := 0, 0
	for _, b := range buckets {
		maxStack = max(maxStack, b.changed()+b.Errors)
		maxMsgs = max(maxMsgs, b.Messages)
		c.Messages += b.Messages
		c.Changed += b.changed()
		c.Errors += b.Errors
	}
	yMax, mMax := niceCeil(maxStack), niceCeil(maxMsgs)
	for _, frac := range []float64{0, 0.5, 1} {
		c.YTicks = append(c.YTicks, chartTick{
			Pos:   f1(c.Bottom - frac*chartPlotH),
			Left:  strconv.FormatFloat(frac*float64(yMax), 'f', -1, 64),
			Right: strconv.FormatFloat(frac*float64(mMax), 'f', -1, 64),
		})
	}
	bw := chartPlotW / float64(len(buckets))
	labelEvery := max(1, (len(buckets)+chartLabels-1)/chartLabels)
	labelLayout := chartTimeLayoutMinute
	if step >= 24*time.Hour {
		labelLayout = chartTimeLayoutDay
	}
	var line strings.Builder
	for i, b := range buckets {
		x := chartLeft + float64(i)*bw
		w := min(max(bw*chartBarFill, chartMinBar), chartMaxBar)
		bar := chartBar{
			Start: b.Start.Format(time.RFC3339), Messages: b.Messages,
			Changed: b.changed(), Errors: b.Errors,
			X: f1(x + (bw-w)/2), W: f1(w),
			Title: bucketTitle(b, step),
		}
		y := c.Bottom
		stack := func(n int, class string) {
			if n == 0 {
				return
			}
			h := float64(n) / float64(yMax) * chartPlotH
			y -= h
			bar.Rects = append(bar.Rects, chartRect{Y: f1(y), H: f1(h), Class: class})
		}
		for k, n := range b.Changes {
			stack(n, htmlKinds[k].Class)
		}
		stack(b.Errors, "k-error")
		c.Bars = append(c.Bars, bar)
		if line.Len() > 0 {
			line.WriteByte(' ')
		}
		line.WriteString(f1(x+bw/2) + "," + f1(c.Bottom-float64(b.Messages)/float64(mMax)*chartPlotH))
		if i%labelEvery == 0 {
			c.XTicks = append(c.XTicks, chartTick{Pos: f1(x), Label: b.Start.Format(labelLayout)})
		}
	}
	c.Line = line.String()
	return c
}

func stepText(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		if d == 24*time.Hour {
			return "1 day"
		}
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d%time.Hour == 0:
		if d == time.Hour {
			return "1 hour"
		}
		return fmt.Sprintf("%d hours", d/time.Hour)
	default:
		if d == time.Minute {
			return "1 minute"
		}
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
}

// bucketTitle is a bar's tooltip: its time and counts.
func bucketTitle(b htmlBucket, step time.Duration) string {
	layout := chartTooltipLayout
	if step%(24*time.Hour) == 0 {
		layout = chartTooltipLayoutDayStart
	}
	var t strings.Builder
	fmt.Fprintf(&t, "%s UTC, %s: %d messages, %d changed", b.Start.Format(layout), stepText(step), b.Messages, b.changed())
	var kinds []string
	for i, n := range b.Changes {
		if n > 0 {
			kinds = append(kinds, fmt.Sprintf("%s %d", htmlKinds[i].Label, n))
		}
	}
	if len(kinds) > 0 {
		t.WriteString(" (" + strings.Join(kinds, ", ") + ")")
	}
	if b.Errors > 0 {
		fmt.Fprintf(&t, ", %d errors", b.Errors)
	}
	return t.String()
}

// htmlCSP allows the page its own inline script and style, by hash, and
// nothing else: no fetch of any kind, no other script, no form, no base.
var htmlCSP = "default-src 'none'; script-src " + cspHash(htmlScript) +
	"; style-src " + cspHash(htmlStyle) + "; img-src data:; base-uri 'none'; form-action 'none'"

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

var htmlTemplate = template.Must(template.New("report").Parse(htmlPageTemplate))

const htmlPageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{.CSP}}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Meta.Title}}</title>
<style>{{.Style}}</style>
</head>
<body>
<header>
<h1 data-testid="title">{{.Meta.Title}}</h1>
<dl class="meta">
{{- with .Meta.Filter}}<div><dt>filter</dt><dd><code data-testid="filter">{{.}}</code></dd></div>{{end}}
{{- with .Days}}<div><dt>days</dt><dd data-testid="days">{{.}}</dd></div>{{end}}
{{- with .Meta.Selection}}<div><dt>selection</dt><dd><code data-testid="selection">{{.}}</code></dd></div>{{end}}
{{- with .Started}}<div><dt>started</dt><dd data-testid="started">{{.}}</dd></div>{{end}}
{{- with .Took}}<div><dt>took</dt><dd data-testid="took">{{.}}</dd></div>{{end}}
</dl>
</header>
{{- if not .Sum.Complete}}
<div class="banner" role="alert" data-testid="incomplete"><strong>Incomplete report:</strong> the run stopped before every listed message was replayed{{with .Sum.Stopped}} (<span data-testid="stopped">{{.}}</span>){{end}}. The counts below are of the {{.Sum.Messages}} messages replayed, out of {{.Sum.Listed}} listed.</div>
{{- end}}
<section class="cards" aria-label="summary">
{{- range .Cards}}
<div class="card {{.Class}}"><div class="n" data-testid="sum-{{.Key}}">{{.N}}</div><div class="l">{{.Label}}</div></div>
{{- end}}
</section>

<section>
<h2>Changes over time</h2>
{{- with .Chart}}
<p class="legend">
{{- range $.Kinds}}<span class="key"><span class="sw {{.Class}}"></span>{{.Label}}</span>{{end}}
<span class="key"><span class="sw line"></span>messages (right axis)</span>
<span class="muted">one bar per <span data-testid="chart-step">{{.Step}}</span>, UTC</span>
</p>
<svg class="chart" data-testid="chart" viewBox="0 0 {{.W}} {{.H}}" width="100%" role="img" aria-label="changes over time">
{{- range .YTicks}}
<line class="grid" x1="{{$.Chart.Left}}" x2="{{$.Chart.Right}}" y1="{{.Pos}}" y2="{{.Pos}}"></line>
<text class="axis" x="{{$.Chart.Left}}" dx="-6" y="{{.Pos}}" dy="4" text-anchor="end">{{.Left}}</text>
<text class="axis" x="{{$.Chart.Right}}" dx="6" y="{{.Pos}}" dy="4">{{.Right}}</text>
{{- end}}
{{- range .XTicks}}
<text class="axis" x="{{.Pos}}" y="{{$.Chart.Bottom}}" dy="16">{{.Label}}</text>
{{- end}}
{{- range $b := .Bars}}
<g class="bar" data-testid="bucket" data-start="{{.Start}}" data-messages="{{.Messages}}" data-changed="{{.Changed}}" data-errors="{{.Errors}}"><title>{{.Title}}</title><rect class="hover" x="{{.X}}" y="{{$.Chart.Top}}" width="{{.W}}" height="{{$.Chart.PlotH}}"></rect>
{{- range .Rects}}<rect class="{{.Class}}" x="{{$b.X}}" y="{{.Y}}" width="{{$b.W}}" height="{{.H}}"></rect>{{end}}</g>
{{- end}}
<polyline class="line" points="{{.Line}}"></polyline>
</svg>
<p class="muted">In the chart: <span data-testid="chart-messages">{{.Messages}}</span> messages, <span data-testid="chart-changed">{{.Changed}}</span> changed, <span data-testid="chart-errors">{{.Errors}}</span> errors.
{{- if $.Undated}} <span data-testid="undated">{{$.Undated}}</span> messages without a received time are not.{{end}}</p>
{{- else}}
<p class="muted" data-testid="chart-empty">No message with a received time to chart.</p>
{{- end}}
</section>

<section>
<h2>Filter durations</h2>
<table class="durations" data-testid="durations">
<thead><tr><th scope="col">filter</th><th scope="col">measured</th><th scope="col">p50 ms</th><th scope="col">p90 ms</th><th scope="col">p99 ms</th><th scope="col">max ms</th></tr></thead>
<tbody>
<tr><th scope="row">stored verdict (old)</th><td data-testid="n-old">{{.Old.N}}</td><td data-testid="p50-old">{{.Old.P50Text}}</td><td data-testid="p90-old">{{.Old.P90Text}}</td><td data-testid="p99-old">{{.Old.P99Text}}</td><td data-testid="max-old">{{.Old.MaxText}}</td></tr>
<tr><th scope="row">replay (new)</th><td data-testid="n-new">{{.New.N}}</td><td data-testid="p50-new">{{.New.P50Text}}</td><td data-testid="p90-new">{{.New.P90Text}}</td><td data-testid="p99-new">{{.New.P99Text}}</td><td data-testid="max-new">{{.New.MaxText}}</td></tr>
</tbody>
</table>
</section>

<section>
<h2>Changed messages and errors</h2>
<div class="controls">
<label>Filter <input type="search" id="q" data-testid="text-filter" placeholder="any text in a row" autocomplete="off"></label>
<label>Kind <select id="kind" data-testid="kind-filter"><option value="">all kinds</option>
{{- range .Kinds}}<option value="{{.Value}}">{{.Label}} ({{.N}})</option>{{end}}</select></label>
<span class="count"><span data-testid="rows-shown">{{.Rows}}</span> of <span data-testid="rows-total">{{.Rows}}</span> rows</span>
</div>
{{- if .Dropped}}
<p class="banner" data-testid="rows-dropped">The table holds the first {{.Rows}} changed and error messages; {{.Dropped}} more are left out.</p>
{{- end}}
<p class="muted" id="capped" data-testid="rows-capped" hidden></p>
<noscript><p class="banner">The table needs JavaScript.</p></noscript>
<table class="rows" data-testid="changes">
<thead><tr>
<th scope="col" aria-sort="none"><button type="button" data-col="0" data-testid="sort-time">time (UTC)</button></th>
<th scope="col" aria-sort="none"><button type="button" data-col="1" data-testid="sort-sender">sender</button></th>
<th scope="col" aria-sort="none"><button type="button" data-col="2" data-testid="sort-recipient">first recipient</button></th>
<th scope="col" aria-sort="none"><button type="button" data-col="3" data-testid="sort-subject">subject</button></th>
<th scope="col" aria-sort="none"><button type="button" data-col="4" data-testid="sort-old">old</button></th>
<th scope="col" aria-sort="none"><button type="button" data-col="5" data-testid="sort-new">new</button></th>
<th scope="col" aria-sort="none"><button type="button" data-col="6" data-testid="sort-change">change</button></th>
</tr></thead>
<tbody id="rows" data-testid="rows"></tbody>
</table>
</section>
<script type="application/json" id="data">{{.Data}}</script>
<script>{{.Script}}</script>
</body>
</html>
`

const htmlStyle = `
:root { --fg: #1d2330; --muted: #646b7a; --line: #d9dde5; --bg: #fff; --soft: #f4f6f9;
  --ar: #d62728; --ra: #2ca02c; --act: #ff7f0e; --reply: #9467bd; --content: #1f77b4; --err: #444; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 16px 24px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 8px 0; }
h2 { font-size: 17px; margin: 28px 0 8px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; word-break: break-all; }
.meta { display: flex; flex-wrap: wrap; gap: 4px 24px; margin: 0; }
.meta div { display: flex; gap: 6px; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; }
.muted { color: var(--muted); }
.banner { background: #fff4e5; border: 1px solid #f0a848; border-left: 6px solid #e67e00; padding: 10px 14px; border-radius: 4px; margin: 14px 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)); gap: 10px; margin: 16px 0; }
.card { background: var(--soft); border-radius: 6px; padding: 10px 12px; border-top: 4px solid var(--line); }
.card .n { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .l { color: var(--muted); }
.card.changed { border-top-color: var(--fg); }
.card.k-ar { border-top-color: var(--ar); } .card.k-ra { border-top-color: var(--ra); }
.card.k-act { border-top-color: var(--act); } .card.k-reply { border-top-color: var(--reply); }
.card.k-content { border-top-color: var(--content); } .card.k-error { border-top-color: var(--err); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: center; margin: 4px 0; }
.key { display: inline-flex; align-items: center; gap: 5px; }
.sw { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
.sw.line { height: 3px; background: #8a8f99; }
.sw.k-ar, rect.k-ar { background: var(--ar); fill: var(--ar); }
.sw.k-ra, rect.k-ra { background: var(--ra); fill: var(--ra); }
.sw.k-act, rect.k-act { background: var(--act); fill: var(--act); }
.sw.k-reply, rect.k-reply { background: var(--reply); fill: var(--reply); }
.sw.k-content, rect.k-content { background: var(--content); fill: var(--content); }
.sw.k-error, rect.k-error { background: var(--err); fill: var(--err); }
.chart { display: block; max-width: 100%; height: auto; }
.chart .grid { stroke: var(--line); stroke-width: 1; }
.chart .axis { font-size: 11px; fill: var(--muted); }
.chart .line { fill: none; stroke: #8a8f99; stroke-width: 1.5; }
.chart rect.hover { fill: transparent; }
.chart .bar:hover rect.hover { fill: rgba(0, 0, 0, 0.06); }
table { border-collapse: collapse; }
.durations th, .durations td { padding: 4px 14px 4px 0; text-align: right; font-variant-numeric: tabular-nums; }
.durations th:first-child { text-align: left; }
.controls { display: flex; flex-wrap: wrap; gap: 8px 18px; align-items: center; margin: 8px 0; }
.controls input { width: 280px; padding: 4px 6px; font: inherit; }
.controls select { padding: 3px; font: inherit; }
.count { color: var(--muted); }
.rows { width: 100%; table-layout: fixed; }
.rows th { text-align: left; border-bottom: 2px solid var(--line); padding: 0; }
.rows th button { all: unset; cursor: pointer; display: block; padding: 6px 6px; font-weight: 600; width: 100%; box-sizing: border-box; }
.rows th button:focus-visible { outline: 2px solid var(--content); }
.rows th[aria-sort=ascending] button::after { content: " ▲"; font-size: 10px; }
.rows th[aria-sort=descending] button::after { content: " ▼"; font-size: 10px; }
.rows th:nth-child(1) { width: 12em; } .rows th:nth-child(7) { width: 9em; }
.rows td:first-child { white-space: nowrap; }
.rows td { padding: 5px 6px; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
.rows tr.error td { background: #f6f6f6; }
.rows .reply, .rows .note, .rows .more { color: var(--muted); }
.rows .note { display: block; font-size: 12px; }
.act { font-weight: 600; }
.act-accept { color: #1b7f2a; } .act-reject { color: #b3261e; } .act-drop, .act-tempfail { color: #b35c00; } .act-error { color: var(--err); }
.kind { display: inline-block; padding: 1px 6px; border-radius: 10px; color: #fff; font-size: 12px; white-space: nowrap; }
.kind.k-ar { background: var(--ar); } .kind.k-ra { background: var(--ra); } .kind.k-act { background: var(--act); }
.kind.k-reply { background: var(--reply); } .kind.k-content { background: var(--content); } .kind.k-error { background: var(--err); }
`

// htmlScript builds the table from the page's JSON: every text from the
// data goes in with textContent or a text node, never as markup.
const htmlScript = `
(function () {
  "use strict";
  var LIMIT = 2000; // rows drawn at once; the count says how many match
  var KIND = {"accept->reject": "k-ar", "reject->accept": "k-ra", "action": "k-act", "reply": "k-reply", "content": "k-content", "error": "k-error"};
  var ACTIONS = {"accept": 1, "reject": 1, "drop": 1, "tempfail": 1, "error": 1};
  var data = JSON.parse(document.getElementById("data").textContent);
  var tbody = document.getElementById("rows");
  var q = document.getElementById("q");
  var kind = document.getElementById("kind");
  var shownEl = document.querySelector("[data-testid=rows-shown]");
  var totalEl = document.querySelector("[data-testid=rows-total]");
  var capped = document.getElementById("capped");
  var heads = Array.prototype.slice.call(document.querySelectorAll(".rows thead th"));
  var sortCol = -1, sortDir = 1;

  function outcome(action, reply) {
    return action ? (reply ? action + " " + reply : action) : "";
  }
  var rows = data.rows.map(function (r, i) {
    var time = r.t ? r.t.replace("T", " ").replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)$/, "") : "";
    var to = r.r + (r.n > 1 ? " (+" + (r.n - 1) + ")" : "");
    var cells = [time, r.f, to, r.s, outcome(r.oa, r.or), outcome(r.na, r.nr), r.k];
    var keys = cells.map(function (c) { return c.toLowerCase(); });
    keys[0] = r.t || "";
    return {r: r, i: i, cells: cells, keys: keys,
      hay: (cells.join("\n") + "\n" + r.x + "\n" + r.id + "\n" + r.d).toLowerCase()};
  });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text) { e.textContent = text; }
    return e;
  }
  function outcomeCell(td, action, reply) {
    if (!action) { td.appendChild(el("span", "muted", "–")); return; }
    td.appendChild(el("span", "act act-" + (ACTIONS[action] ? action : "other"), action));
    if (reply) {
      td.appendChild(document.createTextNode(" "));
      td.appendChild(el("span", "reply", reply));
    }
  }
  function draw(row) {
    var r = row.r, tr = el("tr", r.k === "error" ? "error" : "");
    tr.title = r.d + " " + r.id;
    tr.appendChild(el("td", "", row.cells[0]));
    tr.appendChild(el("td", "", row.cells[1]));
    var to = el("td", "", r.r);
    if (r.n > 1) {
      to.appendChild(document.createTextNode(" "));
      to.appendChild(el("span", "more", "(+" + (r.n - 1) + ")"));
    }
    tr.appendChild(to);
    tr.appendChild(el("td", "", row.cells[3]));
    var old = el("td");
    outcomeCell(old, r.oa, r.or);
    tr.appendChild(old);
    var neu = el("td");
    outcomeCell(neu, r.na, r.nr);
    if (r.x) { neu.appendChild(el("span", "note", r.x)); }
    tr.appendChild(neu);
    var k = el("td");
    k.appendChild(el("span", "kind " + (KIND[r.k] || ""), r.k));
    tr.appendChild(k);
    return tr;
  }
  function cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; }
  function apply() {
    var text = q.value.trim().toLowerCase(), k = kind.value;
    var shown = rows.filter(function (row) {
      return (!k || row.r.k === k) && (!text || row.hay.indexOf(text) >= 0);
    });
    if (sortCol >= 0) {
      shown.sort(function (a, b) {
        return sortDir * cmp(a.keys[sortCol], b.keys[sortCol]) || a.i - b.i;
      });
    }
    var frag = document.createDocumentFragment();
    shown.slice(0, LIMIT).forEach(function (row) { frag.appendChild(draw(row)); });
    if (shown.length === 0) {
      var td = el("td", "muted", rows.length ? "No row matches." : "No message changed.");
      td.colSpan = 7;
      var tr = el("tr", "empty");
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    shownEl.textContent = String(shown.length);
    totalEl.textContent = String(rows.length);
    capped.hidden = shown.length <= LIMIT;
    capped.textContent = shown.length > LIMIT ? "Only the first " + LIMIT + " matching rows are drawn; narrow the filter to see the others." : "";
  }
  heads.forEach(function (th) {
    var b = th.querySelector("button");
    b.addEventListener("click", function () {
      var col = Number(b.getAttribute("data-col"));
      if (sortCol === col) { sortDir = -sortDir; } else { sortCol = col; sortDir = 1; }
      heads.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      apply();
    });
  });
  q.addEventListener("input", apply);
  kind.addEventListener("change", apply);
  apply();
})();
`
