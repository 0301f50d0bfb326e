// Package monitor serves a process's health, readiness and Prometheus
// metrics over HTTP (the http_listen setting), and defines the metrics the
// edge and the workers count.
//
// Endpoints:
//
//	GET /healthz  200 "ok" while the process runs (liveness).
//	GET /readyz   200 when every readiness check passed within 2 s and the
//	              process is not draining, else 503; a JSON body lists each
//	              check with its error, and the names of the failing ones.
//	GET /metrics  Prometheus text format from the process's own registry.
package monitor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyTimeout bounds one run of the readiness checks: a probe that hangs
// is as bad as one that fails.
const ReadyTimeout = 2 * time.Second

// DrainingCheck is the name of the built-in readiness check that fails
// once SetDraining was called.
const DrainingCheck = "draining"

// Check is one readiness check: nil when that part of the process can do
// its work. It must return when ctx is done.
type Check func(ctx context.Context) error

// Server is the HTTP monitoring endpoint of one process.
type Server struct {
	log      *slog.Logger
	ln       net.Listener
	srv      *http.Server
	served   chan struct{} // closed when Serve returned
	draining atomic.Bool

	mu     sync.Mutex
	checks map[string]Check
}

// NewRegistry returns a private registry (never the global one) with the
// Go runtime and process collectors registered, and sluice_build_info:
// 1, labelled with the program's version and its Go version.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sluice_build_info",
		Help:        "Always 1; its labels are the version and the Go version of the running program.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	info.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info,
	)
	return reg
}

// Start listens on addr (host:port) and serves the endpoints until
// Shutdown. It listens before returning, so that a bad or busy address is
// a start-up error naming http_listen. ctx bounds only the start-up. checks
// may be nil, more can be set with SetCheck; reg nil means a fresh
// NewRegistry.
func Start(ctx context.Context, addr string, checks map[string]func(context.Context) error, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = NewRegistry("unknown")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http_listen %s: %w", addr, err)
	}
	s := &Server{log: log, ln: ln, served: make(chan struct{}), checks: map[string]Check{}}
	for name, c := range checks {
		s.checks[name] = c
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Registry: reg, // counts its own errors there
	}))
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("monitoring endpoint stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	log.Info("monitoring endpoint listening", "addr", ln.Addr().String())
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// SetCheck adds or replaces a readiness check, e.g. once a connection that
// was still being set up at Start is open. Like SetDraining and Shutdown
// it does nothing on a nil *Server (monitoring off).
func (s *Server) SetCheck(name string, c func(context.Context) error) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// SetDraining makes /readyz fail from now on, so that load balancers stop
// sending work while the process finishes what it has.
func (s *Server) SetDraining() {
	if s == nil {
		return
	}
	if !s.draining.Swap(true) {
		s.log.Info("draining: readiness now fails")
	}
}

// Shutdown stops serving, waiting for requests in flight until ctx is
// done, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.served
	if err != nil {
		return fmt.Errorf("monitor: shutdown: %w", err)
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// CheckResult is one entry of the /readyz body.
type CheckResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Readiness is the /readyz body.
type Readiness struct {
	Status  string        `json:"status"` // "ready" or "not ready"
	Checks  []CheckResult `json:"checks"` // by name
	Failing []string      `json:"failing,omitempty"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
	defer cancel()
	rd := s.Ready(ctx)
	code := http.StatusOK
	if len(rd.Failing) > 0 {
		code = http.StatusServiceUnavailable
		s.log.Debug("not ready", "failing", rd.Failing)
	}
	body, err := json.Marshal(rd)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// Ready runs every check at once and waits for them until ctx is done; a
// check still running then fails with ctx's error.
func (s *Server) Ready(ctx context.Context) Readiness {
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	for name, c := range s.checks {
		checks[name] = c
	}
	s.mu.Unlock()

	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(checks)) // buffered: a late check never blocks
	for name, c := range checks {
		go func() {
			defer func() {
				if p := recover(); p != nil {
					results <- result{name, fmt.Errorf("check panicked: %v", p)}
				}
			}()
			results <- result{name, c(ctx)}
		}()
	}
	errs := make(map[string]error, len(checks)+1)
	for len(errs) < len(checks) {
		select {
		case r := <-results:
			errs[r.name] = r.err
		case <-ctx.Done():
			for name := range checks {
				if _, ok := errs[name]; !ok {
					errs[name] = fmt.Errorf("no answer: %w", ctx.Err())
				}
			}
		}
	}
	if _, ok := checks[DrainingCheck]; !ok {
		errs[DrainingCheck] = nil
		if s.draining.Load() {
			errs[DrainingCheck] = errors.New("shutting down")
		}
	}

	rd := Readiness{Status: "ready", Checks: make([]CheckResult, 0, len(errs))}
	for name, err := range errs {
		cr := CheckResult{Name: name, OK: err == nil}
		if err != nil {
			cr.Error = err.Error()
			rd.Failing = append(rd.Failing, name)
		}
		rd.Checks = append(rd.Checks, cr)
	}
	slices.SortFunc(rd.Checks, func(a, b CheckResult) int { return cmp.Compare(a.Name, b.Name) })
	slices.Sort(rd.Failing)
	if len(rd.Failing) > 0 {
		rd.Status = "not ready"
	}
	return rd
}
