package cmd

import (
	"strings"
	"testing"
)

// get-fragments that selects nothing says where it looked and what to do: before, the one line
// was "no fragments selected", for an empty stream and a range before its fragments alike.
func TestGetFragmentsNoneSaysWhatToDo(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--create", "--source", testClip("h264.mkv"))
	mustRun(t, url, nil, "create-stream", "--stream-name", "empty")
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  []string
	}{
		{"empty stream", []string{"--stream-name", "empty"}, "", []string{"the stream has no fragments", "put-media"}},
		{"range before the fragments", []string{"--stream-name", "cam", "--start", "2020-01-01T00:00:00Z", "--end", "2020-01-02T00:00:00Z"}, "",
			[]string{"2020-01-01T00:00:00Z", "kvs list-fragments --stream-name cam"}},
		// README's pipe, list-fragments --output numbers | get-fragments --fragment-numbers -, on
		// an empty stream: before, "--fragment-numbers gave no number", which says neither where
		// the numbers came from nor what to do.
		{"no number on standard input", []string{"--stream-name", "empty", "--fragment-numbers", "-"}, "",
			[]string{"standard input", "kvs list-fragments --stream-name empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, errs := kvsRun(t.Context(), t, url, strings.NewReader(tc.stdin), append([]string{"get-fragments", "-o", t.TempDir() + "/out.mkv"}, tc.args...)...)
			if code != ExitOK {
				t.Fatalf("exit %d\n%s", code, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr does not say %q:\n%s", w, errs)
				}
			}
		})
	}
}
