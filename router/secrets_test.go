package router

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestTheRedactorMasksSecretsSplitAcrossReads(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"a secret in the middle", "key=hunter2;", "key=*******;"},
		{"a secret at the end", "xxhunter2", "xx*******"},
		{"two secrets and a repeat", "hunter2 tok hunter2", "******* *** *******"},
		{"no secret", "nothing to see", "nothing to see"},
		{"a near miss", "hunter hunter3", "hunter hunter3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// OneByteReader splits every secret across reads.
			r := newRedactor(io.NopCloser(iotest.OneByteReader(strings.NewReader(tt.in))), [][]byte{[]byte("hunter2"), []byte("tok")})
			got, err := io.ReadAll(r)
			if err != nil || string(got) != tt.want {
				t.Errorf("got %q %v, want %q", got, err, tt.want)
			}
		})
	}
}
