// Package schema checks messages against the protocol's machine-readable
// documents, docs/asyncapi.yaml and docs/openapi.yaml: the JSON Schemas
// there are compiled once (github.com/santhosh-tekuri/jsonschema/v6) and
// every frame a test receives can be validated against the schema of its
// endpoint and type. It is for tests; the server never loads it.
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/wsserver/wsserver/docs"
)

// Endpoint names a WebSocket endpoint: the channel's key in asyncapi.yaml.
type Endpoint string

// The WebSocket endpoints.
const (
	Chat    Endpoint = "chat"
	Session Endpoint = "session"
)

// EndpointOf returns the endpoint a URL path (query allowed) belongs to.
func EndpointOf(path string) (Endpoint, bool) {
	path, _, _ = strings.Cut(path, "?")
	switch {
	case path == "/ws/chat/":
		return Chat, true
	case strings.HasPrefix(path, "/ws/session/"):
		return Session, true
	}
	return "", false
}

// Protocol holds the compiled schemas of the messages the server sends.
type Protocol struct {
	// sent maps an endpoint to its server messages by their "type".
	sent map[Endpoint]map[string]*jsonschema.Schema
	// codes are the error codes each endpoint documents.
	codes map[Endpoint][]string
}

// AsyncAPI returns docs/asyncapi.yaml compiled; it is compiled once.
var AsyncAPI = sync.OnceValues(func() (*Protocol, error) { return ParseAsyncAPI(docs.AsyncAPI) })

const asyncURL = "https://wsserver.invalid/asyncapi.json"

// ParseAsyncAPI compiles the payload of every message the document's send
// operations list, by channel and message type.
func ParseAsyncAPI(yamlDoc []byte) (*Protocol, error) {
	doc, c, err := Compiler(yamlDoc, asyncURL)
	if err != nil {
		return nil, err
	}
	p := &Protocol{sent: map[Endpoint]map[string]*jsonschema.Schema{}, codes: map[Endpoint][]string{}}
	ops, _ := doc["operations"].(map[string]any)
	if len(ops) == 0 {
		return nil, errors.New("schema: asyncapi has no operations")
	}
	for name, o := range ops {
		op, _ := o.(map[string]any)
		if op["action"] != "send" {
			continue
		}
		chRef, _ := op["channel"].(map[string]any)["$ref"].(string)
		ep := Endpoint(strings.TrimPrefix(chRef, "#/channels/"))
		if p.sent[ep] == nil {
			p.sent[ep] = map[string]*jsonschema.Schema{}
		}
		msgs, _ := op["messages"].([]any)
		for _, m := range msgs {
			ref, _ := m.(map[string]any)["$ref"].(string)
			ptr, err := messagePointer(doc, ref)
			if err != nil {
				return nil, fmt.Errorf("schema: operation %s: %w", name, err)
			}
			payload, _ := lookup(doc, ptr+"/payload").(map[string]any)
			typ, _ := lookup(payload, "/properties/type/const").(string)
			if typ == "" {
				return nil, fmt.Errorf("schema: %s has no const type", ptr)
			}
			if _, dup := p.sent[ep][typ]; dup {
				return nil, fmt.Errorf("schema: %s sends two messages of type %q", ep, typ)
			}
			sch, err := c.Compile(asyncURL + "#" + ptr + "/payload")
			if err != nil {
				return nil, fmt.Errorf("schema: compile %s: %w", ptr, err)
			}
			p.sent[ep][typ] = sch
			if typ == "error" {
				for _, code := range lookup(payload, "/properties/code/enum").([]any) {
					p.codes[ep] = append(p.codes[ep], code.(string))
				}
				slices.Sort(p.codes[ep])
			}
		}
	}
	return p, nil
}

// messagePointer follows a channel message reference to the component
// message it names, and returns that message's JSON pointer.
func messagePointer(doc map[string]any, ref string) (string, error) {
	ptr := strings.TrimPrefix(ref, "#")
	for range 4 {
		m, ok := lookup(doc, ptr).(map[string]any)
		if !ok {
			return "", fmt.Errorf("no message at %s", ref)
		}
		next, ok := m["$ref"].(string)
		if !ok {
			return ptr, nil
		}
		ptr = strings.TrimPrefix(next, "#")
	}
	return "", fmt.Errorf("%s: references too deep", ref)
}

// Types returns the types of the messages the server sends on ep, sorted.
func (p *Protocol) Types(ep Endpoint) []string {
	var out []string
	for t := range p.sent[ep] {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// ErrorCodes returns the error codes documented for ep, sorted.
func (p *Protocol) ErrorCodes(ep Endpoint) []string { return slices.Clone(p.codes[ep]) }

// Validate checks one frame the server sent on ep: it must be a JSON
// object whose type is one the endpoint documents, and match that
// message's schema.
func (p *Protocol) Validate(ep Endpoint, frame []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(frame))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return errors.New("not a JSON object")
	}
	typ, _ := obj["type"].(string)
	sch, ok := p.sent[ep][typ]
	if !ok {
		return fmt.Errorf("type %q is not a message %s sends (asyncapi.yaml has %v)", typ, ep, p.Types(ep))
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("%s %q: %w", ep, typ, err)
	}
	return nil
}

// Compiler turns a YAML document into its JSON form and a compiler that
// holds it under url, so that "url#/json/pointer" compiles any schema in it.
func Compiler(yamlDoc []byte, url string) (map[string]any, *jsonschema.Compiler, error) {
	var y any
	if err := yaml.Unmarshal(yamlDoc, &y); err != nil {
		return nil, nil, fmt.Errorf("schema: parse %s: %w", url, err)
	}
	raw, err := json.Marshal(y)
	if err != nil {
		return nil, nil, fmt.Errorf("schema: %s as JSON: %w", url, err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, err
	}
	doc, ok := v.(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("schema: %s is not an object", url)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(url, v); err != nil {
		return nil, nil, fmt.Errorf("schema: add %s: %w", url, err)
	}
	return doc, c, nil
}

// lookup returns the value at a JSON pointer of v ("/a/b"), nil when there
// is none.
func lookup(v any, ptr string) any {
	if ptr == "" {
		return v
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[tok]
	}
	return v
}

// Lookup is lookup for the tests of the documents.
func Lookup(v any, ptr string) any { return lookup(v, ptr) }

// API holds openapi.yaml compiled, to validate the server's HTTP answers.
type API struct {
	doc map[string]any
	c   *jsonschema.Compiler

	mu       sync.Mutex
	compiled map[string]*jsonschema.Schema // by JSON pointer
}

// OpenAPI returns docs/openapi.yaml compiled; it is compiled once.
var OpenAPI = sync.OnceValues(func() (*API, error) { return ParseOpenAPI(docs.OpenAPI) })

const openURL = "https://wsserver.invalid/openapi.json"

// ParseOpenAPI loads an OpenAPI document for ValidateResponse.
func ParseOpenAPI(yamlDoc []byte) (*API, error) {
	doc, c, err := Compiler(yamlDoc, openURL)
	if err != nil {
		return nil, err
	}
	return &API{doc: doc, c: c, compiled: map[string]*jsonschema.Schema{}}, nil
}

// ValidateResponse checks one HTTP answer: the document must list the
// path, the method and the status, and the JSON body must match the
// status's schema.
func (a *API) ValidateResponse(method, path string, status int, body []byte) error {
	path, _, _ = strings.Cut(path, "?")
	esc := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1") }
	resp := "/paths/" + esc(path) + "/" + strings.ToLower(method) + "/responses/" + fmt.Sprint(status)
	r, ok := lookup(a.doc, resp).(map[string]any)
	if !ok {
		return fmt.Errorf("%s %s: status %d is not in openapi.yaml", method, path, status)
	}
	if ref, ok := r["$ref"].(string); ok {
		resp = strings.TrimPrefix(ref, "#")
	}
	ptr := resp + "/content/application~1json/schema"
	if lookup(a.doc, ptr) == nil {
		return fmt.Errorf("%s %s %d: openapi.yaml has no JSON body", method, path, status)
	}
	a.mu.Lock()
	sch, ok := a.compiled[ptr]
	if !ok {
		var err error
		if sch, err = a.c.Compile(openURL + "#" + ptr); err != nil {
			a.mu.Unlock()
			return fmt.Errorf("compile %s: %w", ptr, err)
		}
		a.compiled[ptr] = sch
	}
	a.mu.Unlock()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s %d: the body is not JSON: %w", method, path, status, err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("%s %s %d: %w", method, path, status, err)
	}
	return nil
}

// errorPtr is the schema of every HTTP error body in openapi.yaml.
const errorPtr = "/components/schemas/Error"

// ErrorCodes returns the HTTP error codes openapi.yaml documents (the
// enum of its Error schema), sorted.
func (a *API) ErrorCodes() []string {
	var out []string
	enum, _ := lookup(a.doc, errorPtr+"/properties/error/properties/code/enum").([]any)
	for _, c := range enum {
		if s, ok := c.(string); ok {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Documents reports whether openapi.yaml describes method on path; the
// answers of the others (refused WebSocket upgrades, unknown paths and
// methods) are checked with ValidateError.
func (a *API) Documents(method, path string) bool {
	path, _, _ = strings.Cut(path, "?")
	esc := strings.ReplaceAll(strings.ReplaceAll(path, "~", "~0"), "/", "~1")
	return lookup(a.doc, "/paths/"+esc+"/"+strings.ToLower(method)) != nil
}

// ValidateError checks an HTTP error body against openapi.yaml's Error
// schema, for the answers no path of the document describes.
func (a *API) ValidateError(body []byte) error {
	a.mu.Lock()
	sch, ok := a.compiled[errorPtr]
	if !ok {
		var err error
		if sch, err = a.c.Compile(openURL + "#" + errorPtr); err != nil {
			a.mu.Unlock()
			return fmt.Errorf("compile %s: %w", errorPtr, err)
		}
		a.compiled[errorPtr] = sch
	}
	a.mu.Unlock()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("the error body is not JSON: %w", err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("the error body: %w", err)
	}
	return nil
}
