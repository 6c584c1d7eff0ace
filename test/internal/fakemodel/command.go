package fakemodel

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
)

// Main runs a fake's command: run with the command line, until SIGINT or
// SIGTERM. -h prints the usage and exits 0; an error is printed after
// name and exits 1.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// DefaultText is the answer of the fakes' commands: the sentence lengths
// of the local model's answer to a long question (31, 7, 12, 10 words),
// which decide how the server's playout pacer spreads the tokens, in the
// words of a real one.
const DefaultText = "Answers here stream as the model writes them, one piece at a time, and each sentence is checked by the guardrail before it is sent to you at the model's pace." +
	" Your thread is kept with its history." +
	" Open it from another device or tab and it is all there." +
	" Only you and the people you invite can see it."

// Flags are the flags every fake's command has: the answer to every call,
// its pace, and where the URL goes.
type Flags struct {
	Text    string
	Words   int
	Pace    time.Duration
	URLFile string
}

// Parse parses a command's args into its Flags, and into the flags extra
// adds (nil: none) to fs; check (nil: none) validates those after the
// common ones. Usage and errors of the flag package go to usage; -h
// returns flag.ErrHelp.
func Parse(name string, args []string, usage io.Writer, extra func(fs *flag.FlagSet), check func() error) (Flags, error) {
	var f Flags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&f.Text, "text", DefaultText, "the answer to every call")
	fs.IntVar(&f.Words, "words", 0, "send the first `N` words of -text, repeating it if it is shorter (0: -text once)")
	fs.DurationVar(&f.Pace, "pace", 20*time.Millisecond, "the time between deltas, on the fake's own clock (20ms: 50 tokens/s)")
	if extra != nil {
		extra(fs)
	}
	fs.StringVar(&f.URLFile, "url-file", "", "also write the endpoint's URL to this `file`")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	switch {
	case fs.NArg() > 0:
		return f, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case len(strings.Fields(f.Text)) == 0:
		return f, errors.New("-text must have words")
	case f.Words < 0:
		return f, errors.New("-words must not be negative")
	case f.Pace < 0:
		return f, errors.New("-pace must not be negative")
	}
	if check != nil {
		return f, check()
	}
	return f, nil
}

// Deltas cuts the first Words words of Text (all of them when Words is 0,
// Text again and again when it is more) into deltas, each word with a
// space before it but the first, as a model streams them.
func (f Flags) Deltas() []string {
	words := strings.Fields(f.Text)
	n := f.Words
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

// Endpoint is a started fake, as its command serves it.
type Endpoint interface {
	Close()
	Outcome() (calls, clientGone int)
}

// Serve announces a started fake at url, on stdout and in f.URLFile,
// logs that it serves with attrs, waits for ctx to end, then closes the
// fake and logs how many calls it had. name prefixes the log lines.
func Serve(ctx context.Context, log *slog.Logger, stdout io.Writer, name string, f Flags, fake Endpoint, url string, attrs ...any) error {
	defer fake.Close()
	if f.URLFile != "" {
		// Written whole, then renamed: a script polling for the file
		// never reads half a URL.
		tmp := f.URLFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(url+"\n"), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, f.URLFile); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintln(stdout, url); err != nil {
		return err
	}
	log.Info(name+": serving", append([]any{"url", url, "deltas", len(f.Deltas()), "pace", f.Pace}, attrs...)...)
	<-ctx.Done()
	fake.Close()
	calls, gone := fake.Outcome()
	log.Info(name+": stopped", "calls", calls, "client_gone", gone)
	return nil
}
