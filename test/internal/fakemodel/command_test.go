package fakemodel_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/wsserver/wsserver/test/internal/fakemodel"
)

func TestDeltas(t *testing.T) {
	tests := []struct {
		name  string
		text  string
		words int
		want  []string
	}{
		{name: "whole text", text: "One two  three.", want: []string{"One", " two", " three."}},
		{name: "cut", text: "One two three.", words: 2, want: []string{"One", " two"}},
		{name: "repeated", text: "One two.", words: 5, want: []string{"One", " two.", " One", " two.", " One"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, fakemodel.Flags{Text: tt.text, Words: tt.words}.Deltas())
		})
	}
}

// TestDefaultText checks the answer keeps the local model's sentence
// lengths for the long benchmark question, which the comparison of
// docs/BENCHMARKS.md relies on.
func TestDefaultText(t *testing.T) {
	d := fakemodel.Flags{Text: fakemodel.DefaultText}.Deltas()
	assert.Equal(t, fakemodel.DefaultText, strings.Join(d, ""))
	var lengths []int
	n := 0
	for _, p := range d {
		n++
		if strings.HasSuffix(p, ".") {
			lengths = append(lengths, n)
			n = 0
		}
	}
	assert.Equal(t, []int{31, 7, 12, 10}, lengths)
}
