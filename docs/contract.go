package docs

import _ "embed"

// AsyncAPI is docs/asyncapi.yaml, the machine-readable WebSocket protocol
// (PROTOCOL.md). It is embedded for the tests that validate the server's
// messages against it (test/schema); the server does not read it.
//
//go:embed asyncapi.yaml
var AsyncAPI []byte

// OpenAPI is docs/openapi.yaml, the machine-readable HTTP API
// (PROTOCOL.md), embedded for the same tests.
//
//go:embed openapi.yaml
var OpenAPI []byte
