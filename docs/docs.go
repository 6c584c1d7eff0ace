// Package docs carries the documents the server itself serves: the browser
// test page of /ws-test/ (docs/ws_test.html), embedded so that the binary
// needs no files beside it.
package docs

import _ "embed"

// WSTestPage is docs/ws_test.html: one self-contained page with inline CSS
// and JavaScript that drives /ws/chat/ and /ws/session/<id>/. Treat it as
// read-only.
//
//go:embed ws_test.html
var WSTestPage []byte
