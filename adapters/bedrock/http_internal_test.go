package bedrock

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// TestClientKeepsConnections checks that NewClient's transport keeps enough
// idle connections for many concurrent streams, and that request bodies are
// still read in full first.
func TestClientKeepsConnections(t *testing.T) {
	c, err := NewClient(context.Background(), ClientConfig{
		Region:      "us-east-1",
		EndpointURL: "http://127.0.0.1:1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	wb, ok := c.Options().HTTPClient.(wholeBody)
	if !ok {
		t.Fatalf("HTTPClient is %T, want wholeBody", c.Options().HTTPClient)
	}
	bc, ok := wb.next.(*awshttp.BuildableClient)
	if !ok {
		t.Fatalf("wholeBody wraps %T, want *awshttp.BuildableClient", wb.next)
	}
	if got := bc.GetTransport().MaxIdleConnsPerHost; got != maxIdleConnsPerHost {
		t.Errorf("MaxIdleConnsPerHost = %d, want %d", got, maxIdleConnsPerHost)
	}
	if got := aws.ToString(c.Options().BaseEndpoint); got != "http://127.0.0.1:1" {
		t.Errorf("BaseEndpoint = %q", got)
	}
}
