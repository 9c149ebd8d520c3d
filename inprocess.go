package prefork

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// One child in the calling process: a Child under test, or under a
// debugger, where the children that Run starts are out of reach.

// RunInProcess runs one child of m in the calling process, serving the
// connections that ln accepts: no master, no other process. It exists so
// that a Child can be tested with go test (package preforktest builds test
// servers on it) and stepped through in a debugger: the children that Run
// starts are other processes, started again from the program's binary.
//
// It serves as a child of Run does, through the same code. It checks m's
// configuration as Run does, but for Network and Addr (ln is the socket);
// calls NewChild once, then Initialize; then takes one connection at a time
// from ln and runs it through PostAccept, AllowDeny, RequestDenied,
// ProcessRequest and PostProcessRequest, with RequestTimeout, until ctx is
// done or MaxRequests requests are served. Request.Served counts as in a
// child; Request.Network is ln.Addr().Network(), and Request.SocketName
// is ListenerName, or else that network and the address, such as
// "tcp 127.0.0.1:9000".
//
// The end of ctx is a graceful stop, as the pool's stop is for a child:
// Request.Stopping is closed, the request in hand may finish, and
// ShutdownTimeout later its context is cancelled. Shutdown is then called
// with nil, a normal end, and RunInProcess returns nil, as it does after
// MaxRequests. A ctx that is done already, or during Initialize, stops the
// child once Initialize has returned. A panic in a hook ends the run as it
// ends a child: Shutdown and the caller get the *PanicError. Otherwise
// RunInProcess returns the error of NewChild, of Initialize (Shutdown gets
// it too) or of ln.Accept.
//
// What differs from a child process: Request.Conn is the net.Conn that ln
// accepted, such as a *net.TCPConn, not the package's own Conn. No master
// stops a request that overruns RequestTimeout, or one that goes on after
// ShutdownTimeout has cancelled its context: RunInProcess waits for it (its
// connection's reads and writes fail half a second after its context ends,
// as in a child). It installs no signal handler, changes neither GOMAXPROCS
// nor the timer slack, calls no ManagerHooks nor PreBind or PostBind, and
// never exits the process.
//
// The caller owns ln: RunInProcess does not close it, and leaves in it the
// connections it has not accepted. To end its wait in Accept when ctx is
// done, it sets ln's deadline, so ln must have a SetDeadline method, as
// *net.TCPListener and *net.UnixListener have; the deadline is cleared
// when RunInProcess returns.
//
// RunInProcess is not m's run: Shutdown and Close do not stop it, it does
// not stop them, and Run may still be called on m. Calls on sockets of
// their own may run at once, each one child.
func (m *Manager) RunInProcess(ctx context.Context, ln net.Listener) error {
	if ln == nil {
		return errors.New("prefork: RunInProcess: nil listener")
	}
	dl, ok := ln.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return fmt.Errorf("prefork: RunInProcess: a %T has no SetDeadline method, which ends its Accept when ctx is done", ln)
	}
	return m.runInProcess(ctx, ln.Addr(), dl.SetDeadline, func(p *inProcess) (*Request, error) {
		conn, err := ln.Accept()
		if err != nil {
			return nil, fmt.Errorf("prefork: accept: %w", err)
		}
		return &Request{Conn: conn, RemoteAddr: conn.RemoteAddr(), Network: p.network, SocketName: p.socketName, Served: p.served, stopping: p.stopping}, nil
	})
}

// RunInProcessPacket is RunInProcess for a packet network: each datagram
// that pc receives is a request. Request.Data is the datagram, valid until
// ProcessRequest (or RequestDenied) returns; RemoteAddr is its sender, nil
// for a Unix socket that is not bound; Reply sends a datagram back to it
// with pc. A datagram longer than 64 KiB is logged and dropped, as in a
// child. The caller owns pc as RunInProcess's caller owns ln: it is not
// closed, and its deadlines are cleared when RunInProcessPacket returns.
func (m *Manager) RunInProcessPacket(ctx context.Context, pc net.PacketConn) error {
	if pc == nil {
		return errors.New("prefork: RunInProcessPacket: nil PacketConn")
	}
	defer pc.SetWriteDeadline(time.Time{})
	buf := make([]byte, maxDatagram+1) // a byte more: a longer datagram fills it
	return m.runInProcess(ctx, pc.LocalAddr(), pc.SetReadDeadline, func(p *inProcess) (*Request, error) {
		n, sender, err := pc.ReadFrom(buf)
		if err != nil {
			return nil, fmt.Errorf("prefork: read: %w", err)
		}
		if n > maxDatagram {
			p.dropLong(sender)
			return nil, nil
		}
		reply := func(b []byte) error {
			if sender == nil {
				return errNoSender
			}
			pc.SetWriteDeadline(time.Now().Add(replyTimeout))
			_, err := pc.WriteTo(b, sender)
			return err
		}
		return &Request{Data: buf[:n], RemoteAddr: sender, Network: p.network, SocketName: p.socketName, Served: p.served, stopping: p.stopping, reply: reply}, nil
	})
}

// inProcess is one child run by RunInProcess.
type inProcess struct {
	dispatcher
	network     string
	socketName  string        // ListenerName, or its network and address
	stopping    chan struct{} // closed when ctx is done
	served      int
	maxRequests int
}

// runInProcess runs a child on the requests that next takes. setDeadline
// sets the deadline of next's wait.
func (m *Manager) runInProcess(ctx context.Context, addr net.Addr, setDeadline func(time.Time) error, next func(*inProcess) (*Request, error)) error {
	cfg, err := m.config(false)
	if err != nil {
		return err
	}
	hardCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	d, err := newDispatcher(cfg, cfg.logger, hardCtx)
	if err != nil {
		return err
	}
	p := &inProcess{dispatcher: d, network: addr.Network(), socketName: cmp.Or(m.ListenerName, addr.Network()+" "+addr.String()), stopping: make(chan struct{}), maxRequests: cfg.requestLimit()}
	defer setDeadline(time.Time{})
	endStop := p.stopOn(ctx, cfg.shutdownTimeout, hardStop, setDeadline)
	err = p.initialize()
	if err == nil {
		err = p.serve(next)
	}
	endStop()
	p.shutdown(err)
	return err
}

// stopOn makes the end of ctx a graceful stop: Stopping closes, the wait
// for a request ends, and the request in hand has timeout to finish before
// its context is cancelled. The function it returns undoes it, and returns
// once nothing of it runs.
func (p *inProcess) stopOn(ctx context.Context, timeout time.Duration, hardStop context.CancelFunc, setDeadline func(time.Time) error) func() {
	var hard *time.Timer
	begun, hardDone := make(chan struct{}), make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(begun)
		close(p.stopping)
		hard = time.AfterFunc(timeout, func() { hardStop(); close(hardDone) })
		setDeadline(time.Unix(1, 0)) // long past: a wait ends at once
	})
	return func() {
		if stop() {
			return // ctx is not done: nothing ran
		}
		<-begun
		if !hard.Stop() {
			<-hardDone
		}
	}
}

func (p *inProcess) stopped() bool {
	select {
	case <-p.stopping:
		return true
	default:
		return false
	}
}

// serve takes requests and serves them, one at a time, until the stop or
// MaxRequests; it returns nil then, and otherwise why it cannot go on.
func (p *inProcess) serve(next func(*inProcess) (*Request, error)) error {
	for !p.stopped() {
		if p.maxRequests > 0 && p.served >= p.maxRequests {
			p.log.Debug("prefork: child reached MaxRequests", "served", p.served)
			return nil
		}
		r, err := next(p)
		if err != nil {
			if p.stopped() { // the stop ended the wait
				return nil
			}
			return err
		}
		if r == nil { // a datagram too long, dropped
			continue
		}
		err = p.handle(r)
		p.served++
		if err != nil {
			return err
		}
	}
	return nil
}
