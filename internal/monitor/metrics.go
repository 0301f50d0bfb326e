package monitor

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics, all registered on the registry the caller passes (never the
// global one):
//
// Worker (NewWorkerMetrics):
//
//	sluice_worker_jobs_total{result}     counter: jobs ended, result = accept, reject, drop, tempfail
//	                                     (the verdict sent), skipped_expired (deadline passed, never run),
//	                                     skipped_invalid (undecodable or without a deadline)
//	sluice_worker_filter_seconds         histogram: FilterCommand run time, per run
//	sluice_worker_slots_busy             gauge: jobs being handled now
//	sluice_worker_slots                  gauge: configured slots (worker.slots)
//
// Edge (NewEdgeMetrics):
//
//	sluice_edge_sessions_active          gauge: client connections being served
//	sluice_edge_connections_total{result} counter: result = accepted, busy (421, MaxConnections),
//	                                     per_client (421, max_connections_per_client),
//	                                     upstream_unreachable (OutAddress did not answer)
//	sluice_edge_limits_total{limit}      counter: commands or sessions a limit ended, limit = one of Limits
//	sluice_edge_messages_total{status}   counter: one per DATA attempt, status = one of Statuses
//	sluice_edge_verdict_wait_seconds     histogram: from job publish to verdict, for verdicts received
//	sluice_edge_message_bytes            histogram: size of each message received (as stored)

// Worker job results, the values of sluice_worker_jobs_total's result label.
const (
	ResultAccept         = "accept"
	ResultReject         = "reject"
	ResultDrop           = "drop"
	ResultTempFail       = "tempfail"
	ResultSkippedExpired = "skipped_expired"
	ResultSkippedInvalid = "skipped_invalid"
)

// Edge connection results, the values of sluice_edge_connections_total's
// result label.
const (
	ConnAccepted            = "accepted"
	ConnBusy                = "busy"
	ConnPerClient           = "per_client"
	ConnUpstreamUnreachable = "upstream_unreachable"
)

// Message statuses, the values of sluice_edge_messages_total's status label.
const (
	StatusFiltered        = "filtered"         // accepted by the filter and by the upstream
	StatusRejected        = "rejected"         // refused with a 5xx (filter or FilterType reject)
	StatusDropped         = "dropped"          // the filter asked for a silent drop (2xx)
	StatusTempFail        = "tempfail"         // the sender got a 4xx: infrastructure or filter trouble
	StatusSkipped         = "skipped"          // relayed unfiltered (Skip: authenticated)
	StatusUpstreamRefused = "upstream_refused" // filtered, then refused by the upstream
	StatusUpstreamError   = "upstream_error"   // the upstream failed during delivery
	StatusTooBig          = "too_big"          // over MaxMessageSize
	StatusBareLineEnding  = "bare_line_ending" // refused for a bare CR or LF
	StatusClientGone      = "client_gone"      // the client went away mid-DATA
	StatusDeadline        = "deadline"         // the client took longer than data_deadline
	StatusNUL             = "nul_byte"         // refused for a NUL byte (nul_bytes: reject)
)

// Statuses lists every message status, in a stable order.
var Statuses = []string{
	StatusFiltered, StatusRejected, StatusDropped, StatusTempFail, StatusSkipped,
	StatusUpstreamRefused, StatusUpstreamError, StatusTooBig, StatusBareLineEnding, StatusClientGone,
	StatusDeadline, StatusNUL,
}

// Limits lists the values of sluice_edge_limits_total's limit label: the
// session's Limit* names.
var Limits = []string{"command_deadline", "data_deadline", "hard_error_limit", "early_talker",
	"recipient_limit", "message_size", "xforward_untrusted", "starttls_pipelined"}

// durationBuckets span a quick filter (milliseconds) to a slow scanner or a
// verdict that waited for the job deadline (minutes).
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// sizeBuckets: 1 KiB to 256 MiB, by fours.
var sizeBuckets = prometheus.ExponentialBuckets(1024, 4, 10)

// WorkerMetrics is what a worker counts. Its methods do nothing on a nil
// *WorkerMetrics, so that counting is optional.
type WorkerMetrics struct {
	jobs          *prometheus.CounterVec
	filterSeconds prometheus.Histogram
	slotsBusy     prometheus.Gauge
	slots         prometheus.Gauge
}

// NewWorkerMetrics registers the worker metrics on reg. Several workers
// in one process (in-process pools) share one WorkerMetrics.
func NewWorkerMetrics(reg prometheus.Registerer) *WorkerMetrics {
	m := &WorkerMetrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_worker_jobs_total",
			Help: "Filter jobs ended, by result: the verdict's action, or why the job was skipped.",
		}, []string{"result"}),
		filterSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_worker_filter_seconds",
			Help:    "Time the FilterCommand ran, per run.",
			Buckets: durationBuckets,
		}),
		slotsBusy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_worker_slots_busy",
			Help: "Filter jobs being handled now.",
		}),
		slots: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_worker_slots",
			Help: "Filter jobs this process handles at most at once.",
		}),
	}
	reg.MustRegister(m.jobs, m.filterSeconds, m.slotsBusy, m.slots)
	// Every result shows from the start, at zero: rate() needs the series.
	for _, r := range Results {
		m.jobs.WithLabelValues(r)
	}
	return m
}

// Results lists the values of sluice_worker_jobs_total's result label.
var Results = []string{ResultAccept, ResultReject, ResultDrop, ResultTempFail, ResultSkippedExpired, ResultSkippedInvalid}

// Job counts a job that ended with result, one of Results.
func (m *WorkerMetrics) Job(result string) {
	if m == nil || !slices.Contains(Results, result) {
		return
	}
	m.jobs.WithLabelValues(result).Inc()
}

// FilterRan records one run of the FilterCommand.
func (m *WorkerMetrics) FilterRan(d time.Duration) {
	if m == nil {
		return
	}
	m.filterSeconds.Observe(d.Seconds())
}

// Busy adds delta to the slots in use: +1 when a job starts, -1 when it ends.
func (m *WorkerMetrics) Busy(delta int) {
	if m == nil {
		return
	}
	m.slotsBusy.Add(float64(delta))
}

// AddSlots adds n configured slots (a process may run several pools).
func (m *WorkerMetrics) AddSlots(n int) {
	if m == nil {
		return
	}
	m.slots.Add(float64(n))
}

// EdgeMetrics is what an edge counts. Its methods do nothing on a nil
// *EdgeMetrics, so that counting is optional.
type EdgeMetrics struct {
	sessions    prometheus.Gauge
	connections *prometheus.CounterVec
	limits      *prometheus.CounterVec
	messages    *prometheus.CounterVec
	panics      prometheus.Counter
	verdictWait prometheus.Histogram
	size        prometheus.Histogram
}

// NewEdgeMetrics registers the edge metrics on reg.
func NewEdgeMetrics(reg prometheus.Registerer) *EdgeMetrics {
	m := &EdgeMetrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_edge_sessions_active",
			Help: "Client connections being served now.",
		}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_edge_connections_total",
			Help: "Client connections, by result: accepted, busy (over MaxConnections), per_client (over max_connections_per_client), upstream_unreachable.",
		}, []string{"result"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_edge_limits_total",
			Help: "Commands or sessions ended by a limit: deadlines, error and recipient limits, early talkers, declared sizes, untrusted XFORWARD.",
		}, []string{"limit"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_edge_messages_total",
			Help: "Messages (DATA attempts), by how they ended.",
		}, []string{"status"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_edge_session_panics_total",
			Help: "Sessions ended by a panic, each answered 421 and logged with its stack; any is a bug.",
		}),
		verdictWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_edge_verdict_wait_seconds",
			Help:    "Time from publishing a filter job to receiving its verdict.",
			Buckets: durationBuckets,
		}),
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_edge_message_bytes",
			Help:    "Size of each message received, as stored.",
			Buckets: sizeBuckets,
		}),
	}
	reg.MustRegister(m.sessions, m.connections, m.limits, m.messages, m.panics, m.verdictWait, m.size)
	for _, r := range []string{ConnAccepted, ConnBusy, ConnPerClient, ConnUpstreamUnreachable} {
		m.connections.WithLabelValues(r)
	}
	for _, l := range Limits {
		m.limits.WithLabelValues(l)
	}
	for _, s := range Statuses {
		m.messages.WithLabelValues(s)
	}
	return m
}

// SessionStarted counts a connection being served; pair with SessionEnded.
func (m *EdgeMetrics) SessionStarted() {
	if m == nil {
		return
	}
	m.sessions.Inc()
}

// SessionEnded counts a served connection closed.
func (m *EdgeMetrics) SessionEnded() {
	if m == nil {
		return
	}
	m.sessions.Dec()
}

// Connection counts a client connection with one of the Conn* results.
func (m *EdgeMetrics) Connection(result string) {
	if m == nil {
		return
	}
	switch result {
	case ConnAccepted, ConnBusy, ConnPerClient, ConnUpstreamUnreachable:
	default:
		return // keep the label's values fixed
	}
	m.connections.WithLabelValues(result).Inc()
}

// Limit counts a command or session a limit ended (one of Limits).
func (m *EdgeMetrics) Limit(limit string) {
	if m == nil || !slices.Contains(Limits, limit) {
		return
	}
	m.limits.WithLabelValues(limit).Inc()
}

// Message counts one DATA attempt by how it ended (one of Statuses).
func (m *EdgeMetrics) Message(status string) {
	if m == nil || !slices.Contains(Statuses, status) {
		return
	}
	m.messages.WithLabelValues(status).Inc()
}

// SessionPanic counts a session that recovered from a panic.
func (m *EdgeMetrics) SessionPanic() {
	if m == nil {
		return
	}
	m.panics.Inc()
}

// VerdictWait records how long a verdict took to come back.
func (m *EdgeMetrics) VerdictWait(d time.Duration) {
	if m == nil {
		return
	}
	m.verdictWait.Observe(d.Seconds())
}

// MessageSize records the size of a received message.
func (m *EdgeMetrics) MessageSize(n int64) {
	if m == nil {
		return
	}
	m.size.Observe(float64(n))
}
