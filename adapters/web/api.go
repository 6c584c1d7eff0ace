package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wsserver/wsserver/core/conversation"
)

// The thread API of PROTOCOL.md §8: a CSRF token for anyone, then history and
// summaries of a thread for callers with the API key and a token.

const (
	// csrfCookie and csrfHeader are Django's names, which clients use.
	csrfCookie = "csrftoken"
	csrfHeader = "X-CSRFToken"

	// maxAPIBody bounds the body of an API call.
	maxAPIBody = 1 << 20

	// historyTimeout and summarizeTimeout bound one call: a store read,
	// and a store read then a model call.
	historyTimeout   = 10 * time.Second
	summarizeTimeout = 30 * time.Second

	// statusClientClosed is logged (nginx's convention) when the caller
	// went away before the answer; nobody reads the response.
	statusClientClosed = 499
)

// createdAtLayout is RFC 3339 in UTC with microseconds always written
// (what PostgreSQL keeps), so that every store renders a time the same
// way and clients need not parse two shapes.
const createdAtLayout = "2006-01-02T15:04:05.000000Z07:00"

// csrf returns the token signer of this instance's secret. Deriving the
// key costs one HMAC.

// csrfToken answers GET /api/csrf-token/ with a new token, in the body and
// in the csrftoken cookie, like Django's get_token view. It needs no API
// key, as the original did and as its README's clients expect (they fetch
// a token first, then call the API with the token and the key): a token
// alone grants nothing.
func (s *Server) csrfToken(c echo.Context) error {
	r, w := c.Request(), c.Response()
	signer := s.csrf
	token, err := signer.Issue()
	if err != nil {
		return s.apiFailure(c, "issue csrf token", err)
	}
	ttl := signer.TTL()
	//nolint:gosec // G124: deliberately not HttpOnly (browser JS reads the token, as Django's csrftoken); Secure is set behind TLS, SameSite=Lax
	http.SetCookie(w, &http.Cookie{
		Name:    csrfCookie,
		Value:   token,
		Path:    "/",
		MaxAge:  int(ttl / time.Second),
		Expires: time.Now().Add(ttl).UTC(),
		// Not HttpOnly: browser code reads the cookie to fill in the
		// header, as with Django's.
		SameSite: http.SameSiteLaxMode,
		Secure:   overTLS(r),
	})
	w.Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]string{"csrfToken": token})
}

// overTLS reports whether the client reached us over TLS: directly, or
// through the ALB, which terminates TLS and says so in X-Forwarded-Proto.
// A forged header only makes the cookie Secure, which harms nobody.
func overTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

type threadRequest struct {
	ThreadID json.RawMessage `json:"thread_id"`
}

type historyResponse struct {
	ThreadID string           `json:"thread_id"`
	Messages []historyMessage `json:"messages"`
}

type historyMessage struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Content   string `json:"content"`
	CreatedAt string `json:"created_at"`
	Cancelled bool   `json:"cancelled,omitempty"`
}

type summaryResponse struct {
	ThreadID string `json:"thread_id"`
	Summary  string `json:"summary"`
}

// threadHistory answers POST /api/thread/history.
func (s *Server) threadHistory(c echo.Context) error {
	threadID, ok := s.threadCall(c)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), historyTimeout)
	defer cancel()
	msgs, err := s.cfg.Chat.History(ctx, threadID)
	if err != nil {
		return s.threadFailure(c, "thread history", threadID, err)
	}
	out := historyResponse{ThreadID: threadID, Messages: make([]historyMessage, len(msgs))}
	for i, m := range msgs {
		out.Messages[i] = historyMessage{
			ID:        m.ID,
			Role:      string(m.Role),
			Content:   m.Content,
			CreatedAt: m.CreatedAt.UTC().Format(createdAtLayout),
			Cancelled: m.Cancelled,
		}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, out)
}

// threadSummarize answers POST /api/thread/summarize.
func (s *Server) threadSummarize(c echo.Context) error {
	threadID, ok := s.threadCall(c)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), summarizeTimeout)
	defer cancel()
	summary, err := s.cfg.Chat.Summarize(ctx, threadID)
	if err != nil {
		return s.threadFailure(c, "thread summary", threadID, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, summaryResponse{ThreadID: threadID, Summary: summary})
}

// threadCall checks an API call in the order of PROTOCOL.md §8 — the key (401),
// the CSRF token (403), then the body (415, 413, 400) — and returns its
// thread id. When it reports false it has written the refusal.
func (s *Server) threadCall(c echo.Context) (string, bool) {
	r, w := c.Request(), c.Response()
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid API key is required in the Authorization header")
		return "", false
	}
	if !s.csrfValid(c) {
		return "", false
	}
	if !jsonBody(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
		return "", false
	}
	if r.ContentLength > maxAPIBody {
		writeError(w, http.StatusRequestEntityTooLarge, "payload_too_large", "the body must be at most 1 MiB")
		return "", false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "payload_too_large", "the body must be at most 1 MiB")
		} else {
			writeError(w, http.StatusBadRequest, "invalid_request", "the body could not be read")
		}
		return "", false
	}
	threadID, code, msg := decodeThreadRequest(body)
	if code != "" {
		writeError(w, http.StatusBadRequest, code, msg)
		return "", false
	}
	return threadID, true
}

// csrfValid checks the X-CSRFToken header; the cookie is not needed (it is
// there for browser code to copy into the header). It writes the 403
// itself; the reason is logged, the client only learns that the token is
// missing or not valid.
func (s *Server) csrfValid(c echo.Context) bool {
	r, w := c.Request(), c.Response()
	token := r.Header.Get(csrfHeader)
	if token == "" {
		writeError(w, http.StatusForbidden, "csrf_failed", "the X-CSRFToken header is required; get a token from GET /api/csrf-token/")
		return false
	}
	if err := s.csrf.Check(token); err != nil {
		s.cfg.Log.InfoContext(r.Context(), "csrf token refused", "path", r.URL.Path, "reason", err)
		writeError(w, http.StatusForbidden, "csrf_failed", "the CSRF token is not valid or has expired; get a new one from GET /api/csrf-token/")
		return false
	}
	return true
}

// jsonBody reports whether a Content-Type may carry the JSON body. JSON
// types are accepted, and so are the types clients send when nobody set
// one: none at all, curl -d's form type and fetch's text/plain (the
// original parsed the body whatever the header said). Anything else —
// multipart, XML — is a mistake worth a clear 415.
func jsonBody(contentType string) bool {
	if strings.TrimSpace(contentType) == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch {
	case mt == "application/json", strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return true
	case mt == "application/x-www-form-urlencoded", mt == "text/plain":
		return true
	}
	return false
}

// decodeThreadRequest parses {"thread_id":".."}; on failure it returns the
// code and message of the 400. Unknown fields are ignored.
func decodeThreadRequest(body []byte) (threadID, code, msg string) {
	var req *threadRequest // nil after null
	if err := json.Unmarshal(body, &req); err != nil || req == nil {
		var ute *json.UnmarshalTypeError
		if err != nil && !errors.As(err, &ute) {
			return "", "invalid_json", "the body is not valid JSON"
		}
		return "", "invalid_json", `the body must be a JSON object like {"thread_id":"..."}`
	}
	if len(req.ThreadID) == 0 || string(req.ThreadID) == "null" {
		return "", "invalid_request", "thread_id is required"
	}
	if err := json.Unmarshal(req.ThreadID, &threadID); err != nil {
		return "", "invalid_request", "thread_id must be a string"
	}
	switch {
	case strings.TrimSpace(threadID) == "":
		return "", "invalid_request", "thread_id must not be empty"
	case !conversation.ValidThreadID(threadID):
		return "", "invalid_request", "thread_id must be 1 to 128 characters of A-Z a-z 0-9 _ - . :"
	}
	return threadID, "", ""
}

// threadFailure answers a failed History or Summarize call.
func (s *Server) threadFailure(c echo.Context, op, threadID string, err error) error {
	r, w := c.Request(), c.Response()
	switch {
	case errors.Is(err, conversation.ErrThreadNotFound):
		writeError(w, http.StatusNotFound, "thread_not_found", "no thread has this thread_id")
	case r.Context().Err() != nil:
		s.cfg.Log.InfoContext(r.Context(), op+": the client went away", "thread_id", threadID)
		writeError(w, statusClientClosed, "client_closed", "the request was cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		s.cfg.Log.ErrorContext(r.Context(), op+" timed out", "thread_id", threadID, "err", err)
		writeError(w, http.StatusGatewayTimeout, "timeout", "the answer took too long; try again")
	default:
		s.cfg.Log.ErrorContext(r.Context(), op+" failed", "thread_id", threadID, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
	}
	return nil
}

// apiFailure answers an unexpected failure with a 500 and logs it.
func (s *Server) apiFailure(c echo.Context, op string, err error) error {
	s.cfg.Log.ErrorContext(c.Request().Context(), op+" failed", "err", err)
	writeError(c.Response(), http.StatusInternalServerError, "internal", "internal error")
	return nil
}
