// Command fakebedrock serves the fake Bedrock Runtime endpoint of package
// fakebedrock on its own, so that a whole wsserver can run on the Bedrock
// adapters with no AWS account, for load tests:
//
//	fakebedrock -pace 20ms -url-file /tmp/fake.url &
//	AWS_BEDROCK_REGION=us-east-1 BEDROCK_MODEL_ID_CHAT=some-model \
//	BEDROCK_ENDPOINT_URL=$(cat /tmp/fake.url) \
//	AWS_ACCESS_KEY_ID=AKID AWS_SECRET_ACCESS_KEY=secret wsserver
//
// Every call gets the same answer: -text (by default a 60-word answer
// shaped like the local model's: sentences of 31, 7, 12 and 10 words),
// cut to (or repeated up to) -words deltas, each a word with the space
// before it, -pace apart; ApplyGuardrail passes everything after
// -guardrail-delay. The fake listens on 127.0.0.1 on a port of its
// choosing (the package offers no other); the URL is printed on stdout
// and written to -url-file. SIGINT or SIGTERM closes the streams in
// progress and ends it.
//
// It keeps no header or body of the calls (fakebedrock's Light), only
// their count and outcome: about 3 KB a call otherwise, 1 GB in an hour of
// the 200-chat benchmark.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wsserver/wsserver/test/fakebedrock"
)

// defaultText is the answer: the sentence lengths of the local model's
// answer to a long question (31, 7, 12, 10 words), which decide how the
// server's playout pacer spreads the tokens, in the words of a real one.
const defaultText = "Answers here stream as the model writes them, one piece at a time, and each sentence is checked by the guardrail before it is sent to you at the model's pace." +
	" Your thread is kept with its history." +
	" Open it from another device or tab and it is all there." +
	" Only you and the people you invite can see it."

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fakebedrock:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	text    string
	words   int
	pace    time.Duration
	guard   time.Duration
	urlFile string
}

func parse(args []string, usage io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("fakebedrock", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&o.text, "text", defaultText, "the answer to every call")
	fs.IntVar(&o.words, "words", 0, "send the first `N` words of -text, repeating it if it is shorter (0: -text once)")
	fs.DurationVar(&o.pace, "pace", 20*time.Millisecond, "the time between deltas, on the fake's own clock (20ms: 50 tokens/s)")
	fs.DurationVar(&o.guard, "guardrail-delay", 0, "how long each ApplyGuardrail call takes to answer (a guardrail's round trip)")
	fs.StringVar(&o.urlFile, "url-file", "", "also write the endpoint's URL to this `file`")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case len(strings.Fields(o.text)) == 0:
		return o, errors.New("-text must have words")
	case o.words < 0:
		return o, errors.New("-words must not be negative")
	case o.pace < 0:
		return o, errors.New("-pace must not be negative")
	case o.guard < 0:
		return o, errors.New("-guardrail-delay must not be negative")
	}
	return o, nil
}

// deltas cuts the first n words of text (all of them when n is 0, text
// again and again when n is more) into deltas, each word with a space
// before it but the first, as a model streams them.
func deltas(text string, n int) []string {
	words := strings.Fields(text)
	if n == 0 {
		n = len(words)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = words[i%len(words)]
		if i > 0 {
			out[i] = " " + out[i]
		}
	}
	return out
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	d := deltas(o.text, o.words)
	fake := fakebedrock.New(fakebedrock.Script{Deltas: d, Pace: o.pace, GuardrailDelay: o.guard})
	defer fake.Close()
	fake.Light()
	if o.urlFile != "" {
		// Written whole, then renamed: a script polling for the file
		// never reads half a URL.
		tmp := o.urlFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(fake.URL+"\n"), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, o.urlFile); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintln(stdout, fake.URL); err != nil {
		return err
	}
	log.Info("fakebedrock: serving", "url", fake.URL, "deltas", len(d), "pace", o.pace, "guardrail_delay", o.guard)
	<-ctx.Done()
	fake.Close()
	reqs := fake.Requests()
	gone := 0
	for _, r := range reqs {
		if r.ClientGone {
			gone++
		}
	}
	log.Info("fakebedrock: stopped", "calls", len(reqs), "client_gone", gone)
	return nil
}
