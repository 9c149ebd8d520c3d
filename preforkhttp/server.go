// Package preforkhttp serves an http.Handler from a prefork pool: each child
// process serves one HTTP/1.1 connection at a time with net/http's own
// server, so that a handler that may crash its process, leak, keep global
// state or call a library that is not safe for concurrent use is isolated in
// a process of its own, as gunicorn's sync workers and PHP-FPM isolate
// theirs.
//
//	m := &prefork.Manager{
//		Addr:     "127.0.0.1:8080",
//		NewChild: func() prefork.Child { return &preforkhttp.Server{Handler: mux} },
//	}
//	err := m.Run(ctx)
//
// # What a handler sees
//
// A handler runs as under an ordinary http.Server, with these differences:
//
//   - No other request runs in its process while it runs. Global state is the
//     child's own: a variable set by one request is seen by the next
//     requests that the same child serves, not by other children.
//   - A panic ends the child. The client gets 500 Internal Server Error (or,
//     if the response had begun, its connection is closed), the panic and its
//     stack are logged, and the master starts a new child. net/http alone
//     would log the panic and go on in the same, possibly broken, process.
//   - HTTP/2 is off, over TLS too: a client that offers h2 gets HTTP/1.1.
//     One child serves one connection, and HTTP/2 would multiplex many
//     requests into it.
//   - A connection kept alive holds its child until it closes or has been
//     idle for IdleTimeout (default 2 s, far shorter than net/http's
//     unlimited default): an idle connection is a whole process lost to
//     everyone else. And when connections wait that the pool will not take
//     soon (it is at MaxServers, say), the master asks children whose
//     clients have sent nothing for a tenth of a second to let them go
//     (prefork.Request.Contended): such a connection, between two requests
//     or before its first, is closed as its idle timeout would close it,
//     unless the client has begun to send (a request, or a TLS handshake).
//   - The request's context is cancelled when the client goes away and when
//     the child must stop now (Manager.ShutdownTimeout has run out during a
//     stop, or Manager.RequestTimeout has passed). Manager.RequestTimeout
//     bounds a connection, with all the requests it carries, not a request:
//     use WriteTimeout, or http.TimeoutHandler, for a bound per request.
//   - A hijacked connection (a WebSocket, say) keeps its child until the
//     handler has closed it and returned; the child serves nothing else meanwhile, and the
//     pool starts other children for other clients.
//   - A graceful stop of the pool (SIGTERM) closes idle kept-alive
//     connections at once and lets requests in flight finish; their
//     responses carry "Connection: close". So does a child's retirement
//     (a restart of the children, MaxLifetime, MaxChildMemory), so that a
//     client that keeps its connection busy does not keep an old child.
//
// Request.RemoteAddr, TLS connection state and the context values that
// net/http sets (http.ServerContextKey, http.LocalAddrContextKey) are as
// under net/http.
package preforkhttp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prefork-go/prefork"
)

// Defaults for the zero values of Server's timeouts. A prefork pool has a
// fixed number of processes, so a client that sends its request slowly, or
// keeps an idle connection, takes capacity that a goroutine-per-connection
// server would not miss: the defaults are short.
const (
	// DefaultReadHeaderTimeout bounds the reading of a request's headers:
	// a client that dribbles them (a slowloris) holds a child that long.
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultIdleTimeout bounds the wait for the next request on a
	// connection kept alive.
	DefaultIdleTimeout = 2 * time.Second
)

// ErrNotStream is returned by ProcessRequest for a datagram: HTTP needs a
// stream network (tcp or unix).
var ErrNotStream = errors.New("preforkhttp: HTTP needs a stream network (tcp or unix), not datagrams")

// Server is a prefork.Child that serves HTTP/1.1 with net/http: return a new
// one from Manager.NewChild. Its fields configure net/http's server as the
// fields of the same names on http.Server do, with defaults fit for a pool
// of processes: zero means the default, negative means no limit.
//
// A type that embeds *Server to add hooks of its own and has an Initialize
// method should call Server.Initialize from it, or the certificate is
// loaded, and its error reported, only at the first connection.
type Server struct {
	// Handler serves the requests; nil means http.DefaultServeMux.
	Handler http.Handler

	// ReadHeaderTimeout bounds the reading of a request's headers
	// (default DefaultReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, body included
	// (default: no limit).
	ReadTimeout time.Duration
	// WriteTimeout bounds the writing of a response, from the end of the
	// request's headers (default: no limit).
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a connection
	// kept alive (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// DisableKeepAlives closes every connection after one response.
	DisableKeepAlives bool
	// MaxHeaderBytes bounds a request's headers (default
	// http.DefaultMaxHeaderBytes, 1 MB).
	MaxHeaderBytes int

	// TLSConfig, when set, serves HTTPS. CertFile and KeyFile, when set,
	// name a PEM certificate and key that each child loads as it starts
	// (so that a restart of the children, Manager.RestartChildren, takes
	// a renewed certificate); they are added to a copy of TLSConfig, or
	// to an empty configuration. NextProtos is always "http/1.1".
	TLSConfig         *tls.Config
	CertFile, KeyFile string

	// Logger receives net/http's own errors (TLS handshakes that fail, and
	// the like) at level Warn. Nil means slog.Default(). A handler's panic
	// is logged by the child, with the Manager's Logger.
	Logger *slog.Logger

	srv      *http.Server
	tls      *tls.Config
	ctx      context.Context                    // the request's, for BaseContext
	panicked atomic.Pointer[prefork.PanicError] // by the connection's handler
	// handlers runs while a handler does: one that hijacked its
	// connection may run on after it closed it.
	handlers sync.WaitGroup

	// The connection while it waits for its next request, and how much
	// had been read from it then: written by net/http's goroutine, read by
	// ProcessRequest's when the master asks the child to let its client go
	// (see prefork.Request.Contended). connEnd hears net/http's last word
	// on the connection: closed, or hijacked.
	mu       sync.Mutex
	tracked  *trackedConn
	idle     net.Conn
	idleRead int64
	connEnd  chan struct{}
}

// Initialize prepares the child's HTTP server and loads its certificate.
// It is prefork's Initializer hook.
func (s *Server) Initialize(ctx context.Context) error {
	if s.srv != nil {
		return nil
	}
	logger := s.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if s.TLSConfig != nil || s.CertFile != "" || s.KeyFile != "" {
		cfg, err := s.loadTLS()
		if err != nil {
			return err
		}
		s.tls = cfg
	}
	handler := s.Handler
	if handler == nil {
		handler = http.DefaultServeMux
	}
	srv := &http.Server{
		Handler:           &guarded{s: s, h: handler},
		ReadHeaderTimeout: orDefault(s.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       orDefault(s.ReadTimeout, 0),
		WriteTimeout:      orDefault(s.WriteTimeout, 0),
		IdleTimeout:       orDefault(s.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    s.MaxHeaderBytes,
		// A non-nil, empty map keeps net/http from setting up HTTP/2.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:  func(net.Listener) context.Context { return s.ctx },
		ConnState:    s.connState,
	}
	srv.SetKeepAlivesEnabled(!s.DisableKeepAlives)
	s.srv = srv
	return nil
}

// orDefault applies the rule of Server's fields: zero means def, negative
// means no limit of its own, which is net/http's zero (ReadHeaderTimeout
// and IdleTimeout then fall back to ReadTimeout, as in net/http).
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func (s *Server) loadTLS() (*tls.Config, error) {
	cfg := &tls.Config{}
	if s.TLSConfig != nil {
		cfg = s.TLSConfig.Clone()
	}
	if s.CertFile != "" || s.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("preforkhttp: %w", err)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	if len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil {
		return nil, errors.New("preforkhttp: TLSConfig has no certificate: set CertFile and KeyFile, or TLSConfig.Certificates or GetCertificate")
	}
	cfg.NextProtos = []string{"http/1.1"}
	return cfg, nil
}

// ProcessRequest serves one connection, with every request that comes on
// it, and returns once the connection is closed. It is prefork's Child
// method. It returns a *prefork.PanicError if a handler panicked, which
// ends the child.
func (s *Server) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	if r.Conn == nil {
		return ErrNotStream
	}
	if err := s.Initialize(ctx); err != nil {
		return err
	}
	conn := &trackedConn{Conn: r.Conn, closed: make(chan struct{})}
	var served net.Conn = conn
	if s.tls != nil {
		served = tls.Server(conn, s.tls)
	}
	s.ctx = ctx
	s.mu.Lock()
	s.tracked, s.idle, s.connEnd = conn, nil, make(chan struct{}, 1)
	connEnd := s.connEnd
	s.mu.Unlock()
	l := &oneConn{s: s, req: r, conn: served, closed: conn.closed, stopping: r.Stopping(), contended: r.Contended()}
	// net/http serves the connection on a goroutine of its own, which
	// waits only on it; this one waits in l.Accept for it to end.
	r.ConnGoroutines(1)
	s.srv.Serve(l) // returns once the connection is closed: its error says nothing more
	// A handler may still run: one that hijacked the connection and
	// closed it, or one whose request net/http read just as the
	// connection was closed. net/http's last word on the connection comes
	// after any handler has begun.
	select {
	case <-connEnd:
	case <-ctx.Done():
	}
	s.handlers.Wait()
	if p := s.panicked.Swap(nil); p != nil {
		return p
	}
	return nil
}

// connState follows the connection, to know when it waits for its next
// request, or for its first (a client that connects ahead of it, as
// browsers do), and when net/http is done with it.
func (s *Server) connState(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle = nil
	switch state {
	case http.StateIdle, http.StateNew:
		s.idle, s.idleRead = c, s.tracked.read.Load()
	case http.StateClosed, http.StateHijacked:
		select {
		case s.connEnd <- struct{}{}:
		default:
		}
	}
}

// letClientGo closes the connection if it waits for a request and the
// client has sent nothing since, as its idle timeout would: a client that
// has begun to send a request (or a TLS handshake) is left alone.
func (s *Server) letClientGo() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle != nil && s.tracked.read.Load() == s.idleRead {
		s.idle.Close()
	}
}

// trackedConn is the child's connection as net/http sees it: Close tells
// ProcessRequest that the connection is over, whether net/http closed it or
// a handler that hijacked it did.
type trackedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
	read   atomic.Int64 // bytes read from the client, ever
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// CloseWrite lets net/http half-close the connection as it does a
// *net.TCPConn's.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// oneConn is a net.Listener that yields one connection, then blocks until
// that connection is closed and fails, which ends http.Server.Serve.
type oneConn struct {
	s         *Server
	req       *prefork.Request
	conn      net.Conn
	closed    <-chan struct{}
	stopping  <-chan struct{}
	contended <-chan struct{}
	taken     bool
}

// errConnDone ends Serve; ProcessRequest does not look at it.
var errConnDone = errors.New("preforkhttp: connection done")

func (l *oneConn) Accept() (net.Conn, error) {
	if !l.taken {
		l.taken = true
		return l.conn, nil
	}
	for {
		select {
		case <-l.closed:
			return nil, errConnDone
		case <-l.stopping:
			// The child leaves (the pool stops, or the master retires
			// it): close the connection if it is idle, and after the
			// response in flight if not.
			l.s.srv.SetKeepAlivesEnabled(false)
			l.stopping = nil
		case <-l.contended:
			l.s.letClientGo()
			l.contended = l.req.Contended() // the master asks again at the next wait
		}
	}
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return l.conn.LocalAddr() }
