package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

// runJSON runs wsbench with -json and decodes the report into v.
func runJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := runJSONRaw(t, args...)
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("decode report: %v\n%s", err, out)
	}
}

// runJSONRaw runs wsbench with -json and returns the report as written.
func runJSONRaw(t *testing.T, args ...string) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), append(args, "-json"), &out); err != nil {
		t.Fatalf("run %v: %v\n%s", args, err, out.String())
	}
	return out.Bytes()
}

// The assertions below are on counts only: the schedule fixes how many
// broadcasts are sent, and the grace period ends as soon as every expected
// delivery has arrived, so a slow machine makes the test slower, not flaky.

func TestFanoutEndToEnd(t *testing.T) {
	// Two "instances" sharing their sessions; every session has sockets on both.
	srv := &sessionServer{key: "k3y"}
	urls := startSessionServer(t, srv) + "," + startSessionServer(t, srv)
	pid := strconv.Itoa(os.Getpid())
	var rep fanoutReport
	runJSON(t, &rep, "fanout", "-url", urls, "-key", "k3y",
		"-sockets", "24", "-sessions", "4", "-publishers", "6", "-rate", "300",
		"-warmup", "100ms", "-duration", "500ms", "-grace", "30s",
		"-pid", pid+","+pid)

	// Broadcast k goes out at k/300 s: k = 30..179 fall in [100ms, 600ms).
	const sent, perSession = 150, 24 / 4
	if rep.Connect.Connected != 24 || rep.Connect.Failed != 0 {
		t.Fatalf("connect = %+v, want 24 connected", rep.Connect)
	}
	if rep.Broadcasts.Sent != sent || rep.Broadcasts.WarmUp != 30 || rep.Broadcasts.Publishers != 6 {
		t.Errorf("broadcasts = %+v, want %d sent, 30 warm-up, 6 publishers", rep.Broadcasts, sent)
	}
	d := rep.Deliveries
	if d.Expected != sent*perSession || d.Received != d.Expected || d.Lost != 0 {
		t.Errorf("deliveries = %+v, want %d expected and received", d, sent*perSession)
	}
	if d.OutOfOrder != 0 || d.Duplicates != 0 || d.Foreign != 0 || d.Invalid != 0 {
		t.Errorf("deliveries = %+v, want no out-of-order, duplicate, foreign or invalid", d)
	}
	if d.WarmUp != 30*perSession {
		t.Errorf("warm-up deliveries = %d, want %d", d.WarmUp, 30*perSession)
	}
	if rep.Latency.Samples != sent*perSession || rep.SampleEvery != 1 {
		t.Errorf("latency = %+v (1 in %d), want %d samples", rep.Latency, rep.SampleEvery, sent*perSession)
	}
	if len(rep.Errors) != 0 || rep.Dropped != 0 {
		t.Errorf("errors = %v, dropped = %d, want none", rep.Errors, rep.Dropped)
	}
	if len(rep.Servers) != 2 || rep.Servers[0].Before <= 0 || rep.Servers[0].Sockets != 12 || rep.Servers[1].Sockets != 12 {
		t.Errorf("servers = %+v, want two with RSS and 12 sockets each", rep.Servers)
	}
	// Both -pid are this process: its CPU while publishing, once per server.
	if len(rep.ServerCPU) != 2 || rep.ServerCPU[0] < 0 || rep.ServerCPU[1] < 0 || rep.ServerCPUPerDelivery < 0 {
		t.Errorf("server cpu = %v (%vµs per delivery), want two figures", rep.ServerCPU, rep.ServerCPUPerDelivery)
	}
}

func TestFanoutSampling(t *testing.T) {
	url := startSessionServer(t, &sessionServer{})
	var rep fanoutReport
	runJSON(t, &rep, "fanout", "-url", url, "-sockets", "10", "-sessions", "1",
		"-rate", "200", "-warmup", "0s", "-duration", "500ms", "-grace", "30s", "-max-samples", "300")
	// 100 broadcasts × 10 sockets = 1000 deliveries; 300 samples → 1 in 4.
	if rep.Deliveries.Received != 1000 || rep.Deliveries.Lost != 0 {
		t.Fatalf("deliveries = %+v, want 1000 received", rep.Deliveries)
	}
	if rep.SampleEvery != 4 || rep.Latency.Samples != 250 {
		t.Errorf("sampled 1 in %d, %d samples; want 1 in 4, 250", rep.SampleEvery, rep.Latency.Samples)
	}
}

func TestFanoutReferenceServer(t *testing.T) {
	url := startSessionServer(t, &sessionServer{reference: true})
	var rep fanoutReport
	// No hello_ok: hello is done once sent. The warm-up covers hellos the
	// server has not processed yet when publishing starts.
	runJSON(t, &rep, "fanout", "-url", url, "-no-hello-ok",
		"-sockets", "12", "-sessions", "3", "-rate", "100",
		"-warmup", "1s", "-duration", "300ms", "-grace", "30s")
	if rep.Connect.Connected != 12 || rep.Broadcasts.Sent != 30 {
		t.Fatalf("connect = %+v, broadcasts = %+v; want 12 connected, 30 sent", rep.Connect, rep.Broadcasts)
	}
	if d := rep.Deliveries; d.Expected != 30*4 || d.Received != d.Expected {
		t.Errorf("deliveries = %+v, want 120 expected and received", d)
	}
}

func TestHelloFailures(t *testing.T) {
	tests := []struct {
		name    string
		server  *sessionServer
		args    []string
		wantErr string
	}{
		{"no hello_ok and no -no-hello-ok", &sessionServer{reference: true},
			[]string{"-hello-timeout", "200ms"}, "hello: no hello_ok"},
		{"refused with an error message", &sessionServer{refuseHello: true}, nil, "error message: hello_required"},
		// Connected once hello is sent; the hold ends when the server has
		// closed every socket.
		{"refused with 4001 by the reference server", &sessionServer{reference: true, refuseHello: true},
			[]string{"-no-hello-ok", "-duration", "1m"}, "read: close 4001"},
		{"wrong key", &sessionServer{key: "right"}, []string{"-key", "wrong"}, "dial: http 401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := startSessionServer(t, tt.server)
			var rep idleReport
			args := append([]string{"idle", "-url", url, "-sockets", "5", "-duration", "0s"}, tt.args...)
			runJSON(t, &rep, args...)
			wantConnected := 0
			if len(tt.args) > 0 && tt.args[0] == "-no-hello-ok" {
				wantConnected = 5
			}
			if rep.Connect.Connected != wantConnected {
				t.Errorf("connected = %d, want %d", rep.Connect.Connected, wantConnected)
			}
			found := false
			for k := range rep.Errors {
				found = found || strings.Contains(k, tt.wantErr)
			}
			if !found {
				t.Errorf("errors = %v, want one containing %q", rep.Errors, tt.wantErr)
			}
		})
	}
}

func TestPresenceEndToEnd(t *testing.T) {
	tests := []struct {
		name       string
		skew       int
		wantExact  int64
		wantCounts int64
	}{
		{"exact server", 0, 40, 0},
		{"server counting one too many", 1, 0, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := startSessionServer(t, &sessionServer{presenceSkew: tt.skew})
			var rep presenceReport
			runJSON(t, &rep, "presence", "-url", url, "-sockets", "12", "-sessions", "3",
				"-queries", "40", "-queriers", "3", "-settle", "0s", "-timeout", "30s")
			q := rep.Queries
			if rep.Connect.Connected != 12 || q.Sent != 40 || q.Answered != 40 || q.Timeouts != 0 {
				t.Fatalf("connect = %+v, queries = %+v; want 12 connected, 40 answered", rep.Connect, q)
			}
			if q.Exact != tt.wantExact || q.CountMismatch != tt.wantCounts {
				t.Errorf("queries = %+v, want %d exact, %d count mismatches", q, tt.wantExact, tt.wantCounts)
			}
			// A skewed count also disagrees with len(connections).
			if q.LengthMismatch != tt.wantCounts {
				t.Errorf("length mismatches = %d, want %d", q.LengthMismatch, tt.wantCounts)
			}
			if rep.Latency.Samples != 40 {
				t.Errorf("latency samples = %d, want 40", rep.Latency.Samples)
			}
		})
	}
}

func TestIdleEndToEnd(t *testing.T) {
	url := startSessionServer(t, &sessionServer{})
	var rep idleReport
	runJSON(t, &rep, "idle", "-url", url+","+url, "-sockets", "10", "-sessions", "0",
		"-duration", "0s", "-settle", "0s", "-samples", "2", "-sample-every", "10ms",
		"-pid", strconv.Itoa(os.Getpid())+","+strconv.Itoa(os.Getpid()))
	if rep.Connect.Connected != 10 || rep.Dropped != 0 || rep.Messages != 0 || len(rep.Errors) != 0 {
		t.Fatalf("report = %+v, want 10 connected and nothing else", rep)
	}
	if len(rep.Servers) != 2 {
		t.Fatalf("servers = %+v, want 2", rep.Servers)
	}
	for _, s := range rep.Servers {
		if s.Sockets != 5 || len(s.Settled) != 2 || s.Before <= 0 || s.End <= 0 || s.Error != "" {
			t.Errorf("server = %+v, want 5 sockets, 2 settled samples", s)
		}
	}
}

func TestHumanOutput(t *testing.T) {
	url := startSessionServer(t, &sessionServer{})
	for _, args := range [][]string{
		{"fanout", "-url", url, "-sockets", "4", "-sessions", "2", "-rate", "50", "-warmup", "0s", "-duration", "100ms"},
		{"idle", "-url", url, "-sockets", "2", "-duration", "0s", "-settle", "0s", "-samples", "1", "-pid", strconv.Itoa(os.Getpid())},
		{"presence", "-url", url, "-sockets", "2", "-queries", "3", "-queriers", "1", "-settle", "0s"},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out); err != nil {
			t.Fatalf("run %v: %v", args, err)
		}
		for _, want := range []string{"connect:", "errors:", "# "} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s output lacks %q:\n%s", args[0], want, out.String())
			}
		}
	}
}

func TestArguments(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string // "" for success
	}{
		{[]string{}, "missing command"},
		{[]string{"nope"}, "unknown command"},
		{[]string{"help"}, ""},
		{[]string{"fanout", "-h"}, ""},
		{[]string{"fanout", "-url", "ws://10.1.2.3:8000"}, "loopback"},
		{[]string{"fanout", "-url", "http://127.0.0.1:8000"}, "scheme"},
		{[]string{"fanout", "-url", "ws://127.0.0.1"}, "port"},
		{[]string{"fanout", "-sockets", "10", "-sessions", "20"}, "-sessions"},
		{[]string{"fanout", "-rate", "0"}, "-rate"},
		{[]string{"idle", "-pid", "1,2"}, "-pid"},
		{[]string{"idle", "-prefix", "a/b"}, "-prefix"},
		{[]string{"presence", "-queriers", "0"}, "-queriers"},
		{[]string{"presence", "extra"}, "unexpected arguments"},
		{[]string{"chat", "-h"}, ""},
		{[]string{"chat", "-conns", "0"}, "-conns"},
		{[]string{"chat", "-chats", "0"}, "-chats or -duration"},
		{[]string{"chat", "-chats", "-1"}, "negative"},
		{[]string{"chat", "-data", "{"}, "-data"},
		{[]string{"chat", "-timeout", "0s"}, "-timeout"},
		{[]string{"chat", "-max-samples", "0"}, "-max-samples"},
		{[]string{"chat", "-url", "ws://10.1.2.3:8000"}, "loopback"},
		{[]string{"chat", "-prefix", "a/b"}, "-prefix"},
		{[]string{"chat", "-prefix", strings.Repeat("a", 101)}, "-prefix"},
		{[]string{"chat", "-no-hello-ok"}, "not defined"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		err := run(context.Background(), tt.args, &out)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("run %v: %v", tt.args, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("run %v = %v, want error containing %q", tt.args, err, tt.wantErr)
		}
	}
}

func TestInterruptedRunStillReports(t *testing.T) {
	url := startSessionServer(t, &sessionServer{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"fanout", "-url", url, "-sockets", "4", "-sessions", "2", "-json"}, &out); err != nil {
		t.Fatal(err)
	}
	var rep fanoutReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || rep.Broadcasts.Sent != 0 {
		t.Errorf("report = %+v, want interrupted with nothing sent", rep)
	}
}
