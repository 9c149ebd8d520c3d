package prefork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// How a child runs one request through the Child's hooks.

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

// handle runs one request through the Child's hooks. It returns a
// *PanicError if a hook panicked, which ends the child.
func (w *worker) handle(r *Request) error {
	ctx := w.hardCtx
	if w.cfg.requestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.cfg.requestTimeout)
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
	err := w.process(ctx, r)
	if r.Conn != nil {
		r.Conn.Close()
	}
	if pp := w.hooks.postProcess; pp != nil {
		if perr := guard("PostProcessRequest", func() error { pp.PostProcessRequest(ctx, r, err); return nil }); perr != nil {
			err = perr
		}
	}
	if err == nil { // the common case, without errors.As's allocation
		return nil
	}
	var panicked *PanicError
	if errors.As(err, &panicked) {
		logPanic(w.log, panicked)
		return panicked
	}
	return nil
}

// process runs the hooks between accept and close, and returns why the
// request ended.
func (w *worker) process(ctx context.Context, r *Request) error {
	if pa := w.hooks.postAccept; pa != nil {
		if err := guard("PostAccept", func() error { return pa.PostAccept(ctx, r) }); err != nil {
			w.log.Warn("prefork: PostAccept", "remote", addrString(r.RemoteAddr), "err", err)
			return fmt.Errorf("prefork: PostAccept: %w", err)
		}
	}
	if ad := w.hooks.allowDeny; ad != nil {
		allow := true
		if err := guard("AllowDeny", func() error { allow = ad.AllowDeny(ctx, r); return nil }); err != nil {
			return err
		}
		if !allow {
			if rd := w.hooks.denied; rd != nil {
				if err := guard("RequestDenied", func() error { rd.RequestDenied(ctx, r); return nil }); err != nil {
					return err
				}
			}
			return ErrRequestDenied
		}
	}
	err := guard("ProcessRequest", func() error { return w.child.ProcessRequest(ctx, r) })
	if err != nil {
		w.log.Warn("prefork: request failed", "remote", addrString(r.RemoteAddr), "err", err)
	}
	return err
}

func (w *worker) shutdown(err error) {
	if s, ok := w.child.(Shutdowner); ok {
		if perr := guard("Shutdown", func() error { s.Shutdown(w.hardCtx, err); return nil }); perr != nil {
			logPanic(w.log, perr)
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
