package testutil

import "testing"

func TestNeedTool(t *testing.T) {
	if p := NeedTool(t, "sh"); p == "" {
		t.Fatal("sh not found")
	}
	if p := FindTool("no-such-tool-kvs"); p != "" {
		t.Fatalf("found %s", p)
	}
}
