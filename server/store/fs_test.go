package store

import (
	"testing"
)

func openTestFS(t *testing.T) Store {
	s, err := OpenFS(t.TempDir(), FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
