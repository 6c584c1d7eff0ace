// Command fakeopenai serves the fake OpenAI-compatible endpoint of package
// fakeopenai on its own, so that a whole wsserver can run on the openai
// adapter with no model server, for load tests:
//
//	fakeopenai -pace 20ms -url-file /tmp/fake.url &
//	OPENAI_BASE_URL=$(cat /tmp/fake.url) OPENAI_MODEL_ID_CHAT=some-model wsserver
//
// Every call gets the same answer: -text (by default a 60-word answer
// shaped like the local model's: sentences of 31, 7, 12 and 10 words),
// cut to (or repeated up to) -words deltas, each a word with the space
// before it, -pace apart. The fake listens on 127.0.0.1 on a port of its
// choosing (the package offers no other); the URL is printed on stdout
// and written to -url-file. SIGINT or SIGTERM closes the streams in
// progress and ends it.
//
// It keeps no header or body of the calls (fakeopenai's Light), only
// their count and outcome: a few KB a call otherwise, gigabytes in an
// hour of the 200-chat benchmark.
package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/wsserver/wsserver/test/fakeopenai"
	"github.com/wsserver/wsserver/test/internal/fakemodel"
)

func main() { fakemodel.Main("fakeopenai", run) }

// parse reads the command's flags: the fakes' common ones alone.
func parse(args []string, usage io.Writer) (fakemodel.Flags, error) {
	return fakemodel.Parse("fakeopenai", args, usage, nil, nil)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	fake := fakeopenai.New(fakeopenai.Script{Deltas: o.Deltas(), Pace: o.Pace})
	fake.Light()
	return fakemodel.Serve(ctx, slog.New(slog.NewTextHandler(stderr, nil)), stdout, "fakeopenai", o, fake, fake.URL)
}
