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
	"io"
	"log/slog"
	"time"

	"github.com/wsserver/wsserver/test/fakebedrock"
	"github.com/wsserver/wsserver/test/internal/fakemodel"
)

func main() { fakemodel.Main("fakebedrock", run) }

// options are the command's flags: the fakes' common ones, and how long
// ApplyGuardrail takes.
type options struct {
	fakemodel.Flags
	guard time.Duration
}

func parse(args []string, usage io.Writer) (options, error) {
	var o options
	var err error
	o.Flags, err = fakemodel.Parse("fakebedrock", args, usage, func(fs *flag.FlagSet) {
		fs.DurationVar(&o.guard, "guardrail-delay", 0, "how long each ApplyGuardrail call takes to answer (a guardrail's round trip)")
	}, func() error {
		if o.guard < 0 {
			return errors.New("-guardrail-delay must not be negative")
		}
		return nil
	})
	return o, err
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	fake := fakebedrock.New(fakebedrock.Script{Deltas: o.Deltas(), Pace: o.Pace, GuardrailDelay: o.guard})
	fake.Light()
	return fakemodel.Serve(ctx, slog.New(slog.NewTextHandler(stderr, nil)), stdout, "fakebedrock", o.Flags, fake, fake.URL, "guardrail_delay", o.guard)
}
