package bedrock

import (
	"bytes"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
)

// wholeBody reads a request's body before the transport sends it.
//
// On HTTP/1.1 the SDK closes the request body as soon as the response's
// headers arrive, while net/http's writer may still be making its last
// read of it (the check that the body ends where Content-Length says);
// that read then fails and net/http closes the connection, cutting the
// event stream in the middle. A body read in full beforehand is a plain
// byte reader the SDK cannot close under the transport. Real Bedrock
// speaks HTTP/2, where this does not happen, but a VPC endpoint behind a
// proxy or the test fake may not. Request bodies are small: a copy costs
// nothing next to a model call.
type wholeBody struct {
	next bedrockruntime.HTTPClient
}

func (w wholeBody) Do(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return w.next.Do(r)
	}
	b, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return w.next.Do(r)
}
