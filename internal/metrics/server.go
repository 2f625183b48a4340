package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry holding client_golang's Go runtime
// collector (go_...), its process collector (process_...: CPU time,
// resident and virtual memory, open file descriptors) and cs. It fails if
// two collectors describe the same family.
func NewRegistry(cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	all := append([]prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, cs...)
	for _, c := range all {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics registry: %w", err)
		}
	}
	return reg, nil
}

// closeWait bounds how long Close waits for the scrapes under way.
const closeWait = 2 * time.Second

// Server serves metrics over HTTP at GET /metrics. Listen binds it, Serve
// starts serving, Close stops it; Serve and Close are called by the
// goroutine that owns the server.
type Server struct {
	ln        net.Listener
	srv       *http.Server // nil until Serve
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Listen listens on the TCP address addr (HOST:PORT; port 0 picks a free
// one). Its errors start with "metrics listener".
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	return &Server{ln: ln}, nil
}

// Addr returns the address the server listens on, with the port bound.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve starts answering GET /metrics with what g gathers, in the format
// the scraper asks for (promhttp.HandlerFor; the text format 0.0.4
// without an Accept header), until Close. A gathering error fails the
// scrape with status 500 and is logged on log. Other methods and paths
// get 405 and 404. Serve must be called at most once.
func (s *Server) Serve(g prometheus.Gatherer, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: errorLog{log}}))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.wg.Go(func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	})
}

// Close stops serving, waiting up to 2 s for the scrapes under way (then
// cutting them off), and closes the listener (also when Serve was never called). It may be
// called more than once; later calls return the first one's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.srv == nil {
			s.closeErr = s.ln.Close()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeWait)
		defer cancel()
		if s.closeErr = s.srv.Shutdown(ctx); s.closeErr != nil {
			s.srv.Close() // scrapes still under way end now
		}
		s.wg.Wait()
	})
	return s.closeErr
}

// errorLog is promhttp's Logger over slog.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) { l.log.Error("metrics: " + fmt.Sprint(v...)) }

// ListenAndServe serves a registry of cs (see NewRegistry) on the TCP
// address addr, as Listen and Serve do, and logs the bound address on log
// at info ("metrics", addr=HOST:PORT). The caller closes the server.
func ListenAndServe(addr string, log *slog.Logger, cs ...prometheus.Collector) (*Server, error) {
	reg, err := NewRegistry(cs...)
	if err != nil {
		return nil, err
	}
	s, err := Listen(addr)
	if err != nil {
		return nil, err
	}
	s.Serve(reg, log)
	log.Info("metrics", "addr", s.Addr())
	return s, nil
}
