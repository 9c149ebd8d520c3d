package prefork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// How a child runs the Child's hooks: Initialize, each request, Shutdown.

// dispatcher calls a Child's hooks, for one child. A child process's worker
// and Manager.RunInProcess both serve through it, so that a Child run in
// the test's own process sees the very calls it sees in a child.
type dispatcher struct {
	child          Child
	hooks          requestHooks // the Child's optional hooks, found once
	log            *slog.Logger
	requestTimeout time.Duration
	// hardCtx is cancelled when the child must stop now.
	hardCtx context.Context
}

// newDispatcher calls NewChild, once per child. A panic in it is logged and
// returned as a *PanicError.
func newDispatcher(cfg config, log *slog.Logger, hardCtx context.Context) (dispatcher, error) {
	var user Child
	if err := guard("NewChild", func() error { user = cfg.newChild(); return nil }); err != nil {
		logPanic(cfg.logger, err)
		return dispatcher{}, err
	}
	if user == nil {
		return dispatcher{}, invalid("Manager.NewChild returned nil")
	}
	return dispatcher{child: user, hooks: findRequestHooks(user), log: log, requestTimeout: cfg.requestTimeout, hardCtx: hardCtx}, nil
}

// requestHooks are a Child's optional per-request hooks, nil where it has
// none.
type requestHooks struct {
	postAccept  PostAccepter
	allowDeny   AllowDenier
	denied      RequestDenier
	postProcess PostProcessor
}

func findRequestHooks(c Child) requestHooks {
	var h requestHooks
	h.postAccept, _ = c.(PostAccepter)
	h.allowDeny, _ = c.(AllowDenier)
	h.denied, _ = c.(RequestDenier)
	h.postProcess, _ = c.(PostProcessor)
	return h
}

// initialize calls the Child's Initialize, if it has one.
func (d *dispatcher) initialize() error {
	init, ok := d.child.(Initializer)
	if !ok {
		return nil
	}
	if err := guard("Initialize", func() error { return init.Initialize(d.hardCtx) }); err != nil {
		err = fmt.Errorf("prefork: Initialize: %w", err)
		d.log.Error("prefork: child cannot initialize", "err", err)
		return err
	}
	return nil
}

// handle runs one request through the Child's hooks. It returns a
// *PanicError if a hook panicked, which ends the child.
func (d *dispatcher) handle(r *Request) error {
	ctx := d.hardCtx
	if d.requestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.requestTimeout)
		defer cancel()
	}
	if r.Conn != nil {
		// Once the stop cannot wait any longer or the request has run out
		// of time, a handler that watches ctx has half of killGrace to
		// write a last word; then its reads and writes fail too, for
		// handlers that do not watch ctx, so that the child can go on (or
		// exit by itself) before it is killed.
		defer context.AfterFunc(ctx, func() { r.Conn.SetDeadline(time.Now().Add(killGrace / 2)) })()
	}
	err := d.process(ctx, r)
	if r.Conn != nil {
		r.Conn.Close()
	}
	if pp := d.hooks.postProcess; pp != nil {
		if perr := guard("PostProcessRequest", func() error { pp.PostProcessRequest(ctx, r, err); return nil }); perr != nil {
			err = perr
		}
	}
	if err == nil { // the common case, without errors.As's allocation
		return nil
	}
	var panicked *PanicError
	if errors.As(err, &panicked) {
		logPanic(d.log, panicked)
		return panicked
	}
	return nil
}

// process runs the hooks between accept and close, and returns why the
// request ended.
func (d *dispatcher) process(ctx context.Context, r *Request) error {
	if pa := d.hooks.postAccept; pa != nil {
		if err := guard("PostAccept", func() error { return pa.PostAccept(ctx, r) }); err != nil {
			d.log.Warn("prefork: PostAccept", "remote", addrString(r.RemoteAddr), "err", err)
			return fmt.Errorf("prefork: PostAccept: %w", err)
		}
	}
	if ad := d.hooks.allowDeny; ad != nil {
		allow := true
		if err := guard("AllowDeny", func() error { allow = ad.AllowDeny(ctx, r); return nil }); err != nil {
			return err
		}
		if !allow {
			if rd := d.hooks.denied; rd != nil {
				if err := guard("RequestDenied", func() error { rd.RequestDenied(ctx, r); return nil }); err != nil {
					return err
				}
			}
			return ErrRequestDenied
		}
	}
	err := guard("ProcessRequest", func() error { return d.child.ProcessRequest(ctx, r) })
	if err != nil {
		d.log.Warn("prefork: request failed", "remote", addrString(r.RemoteAddr), "err", err)
	}
	return err
}

// shutdown calls the Child's Shutdown, if it has one, with why the child
// stops.
func (d *dispatcher) shutdown(err error) {
	if s, ok := d.child.(Shutdowner); ok {
		if perr := guard("Shutdown", func() error { s.Shutdown(d.hardCtx, err); return nil }); perr != nil {
			logPanic(d.log, perr)
		}
	}
}

func logPanic(log *slog.Logger, err error) {
	var p *PanicError
	if errors.As(err, &p) {
		log.Error("prefork: panic", "hook", p.Hook, "panic", fmt.Sprint(p.Value), "stack", string(p.Stack))
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
