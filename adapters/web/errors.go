package web

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wsserver/wsserver/core/protocol"
)

// errorBody is the JSON of every HTTP error: {"error":{"code","message"}}.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, message
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(b)
}

// errInternal is what a client is told of a failure it need not know more
// of: the log has the rest.
var errInternal = &protocol.Error{Code: protocol.CodeInternal, Message: "internal error"}

// sendError is the one writer of errors to the sockets of both endpoints:
// {"type":"error","code":..,"message":..} with the code and message of the
// *protocol.Error in err, else errInternal's (err is logged instead).
func (s *Server) sendError(ctx context.Context, c *conn, err error) {
	pe, ok := errors.AsType[*protocol.Error](err)
	if !ok {
		s.cfg.Log.ErrorContext(ctx, "unexpected socket error", "err", err)
		pe = errInternal
	}
	c.SendText(protocol.EncodeError(pe.Code, pe.Message))
}

// httpError renders Echo's errors (unknown routes, wrong methods) in the
// same JSON shape; anything unexpected is a 500 with no detail.
func (s *Server) httpError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, code, msg := http.StatusInternalServerError, "internal", "internal error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		status = he.Code
		switch status {
		case http.StatusNotFound:
			code, msg = "not_found", "no such endpoint"
		case http.StatusMethodNotAllowed:
			code, msg = "method_not_allowed", "method not allowed"
		default:
			code = strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
			if m, ok := he.Message.(string); ok {
				msg = m
			} else {
				msg = http.StatusText(status)
			}
		}
	} else {
		s.cfg.Log.ErrorContext(c.Request().Context(), "request failed", "path", c.Request().URL.Path, "err", err)
	}
	writeError(c.Response(), status, code, msg)
}

func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(p)
				}
				s.cfg.Log.ErrorContext(c.Request().Context(), "panic in handler",
					"path", c.Request().URL.Path, "panic", p, "stack", string(debug.Stack()))
				if !c.Response().Committed {
					writeError(c.Response(), http.StatusInternalServerError, "internal", "internal error")
				}
				err = nil
			}
		}()
		return next(c)
	}
}

// logRequests logs every request but the health checks, which an ALB sends
// every few seconds. The query string is left out: it may hold the key.
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		r := c.Request()
		level := slog.LevelInfo
		if r.URL.Path == "/health/" || r.URL.Path == "/ready/" || r.URL.Path == "/metrics" {
			level = slog.LevelDebug
		}
		s.cfg.Log.Log(r.Context(), level, "request",
			"method", r.Method, "path", r.URL.Path, "status", c.Response().Status,
			"duration", time.Since(start), "remote", c.RealIP())
		return nil
	}
}

// checkHost refuses a Host outside ALLOWED_HOSTS with 400, except on
// /health/, which load balancers call by IP.
func (s *Server) checkHost(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.URL.Path != "/health/" && !s.cfg.HostAllowed(r.Host) {
			writeError(c.Response(), http.StatusBadRequest, "bad_host", "this Host is not allowed")
			return nil
		}
		return next(c)
	}
}
