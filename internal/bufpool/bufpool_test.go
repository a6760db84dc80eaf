package bufpool

import (
	"bytes"
	"sort"
	"testing"
)

func TestClasses(t *testing.T) {
	t.Parallel()
	if sizes[0] != MinSize || sizes[len(sizes)-1] != MaxPooled {
		t.Fatalf("classes %d .. %d", sizes[0], sizes[len(sizes)-1])
	}
	for i := 1; i < len(sizes); i++ {
		if sizes[i] <= sizes[i-1] || sizes[i] > sizes[i-1]*5/4 {
			t.Fatalf("class %d: %d after %d: want increasing, at most a quarter more", i, sizes[i], sizes[i-1])
		}
	}
	for _, tc := range []struct {
		name string
		n    int
		cap  int
	}{
		{"zero", 0, MinSize},
		{"small", 100, MinSize},
		{"min", MinSize, MinSize},
		{"just over min", MinSize + 1, 80 << 10},
		{"5 MB fragment", 5_000_000, 5 << 20},
		{"max", MaxPooled, MaxPooled},
		{"over max", MaxPooled + 1, MaxPooled + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A pooled buffer (other tests put some back) may come from one of the fallback
			// classes above, whose buffers are smaller than the class after them.
			most := tc.cap
			if i := sort.SearchInts(sizes, tc.n); i+fallback+1 < len(sizes) {
				most = sizes[i+fallback+1] - 1
			} else if i < len(sizes) {
				most = MaxPooled
			}
			b := Get(tc.n)
			if len(b) != 0 || cap(b) < tc.cap || cap(b) > most {
				t.Errorf("Get(%d): len %d cap %d, want 0 and %d (pooled: up to %d)", tc.n, len(b), cap(b), tc.cap, most)
			}
		})
	}
}

// TestPutServesItsClass checks that whatever Put takes back (from Get or not) is only handed out
// for requests it holds. sync.Pool may drop anything at any time, so what comes back is not
// checked further.
func TestPutServesItsClass(t *testing.T) {
	t.Parallel()
	for _, c := range []int{MinSize, 100 << 10, 3 << 20, 5_500_000, MinSize - 1, MaxPooled + 1} {
		Put(make([]byte, 10, c))
		for _, n := range []int{c - 1, c} {
			if got := Get(n); cap(got) < n || len(got) != 0 {
				t.Errorf("after Put(cap %d): Get(%d) has len %d, cap %d", c, n, len(got), cap(got))
			}
		}
	}
}

func TestGrow(t *testing.T) {
	t.Parallel()
	b := append(make([]byte, 0, MinSize), "hello"...)
	if g := Grow(b, 10); &g[:1][0] != &b[:1][0] {
		t.Error("Grow moved a buffer that had room")
	}
	g := Grow(b, MinSize)
	if !bytes.Equal(g, []byte("hello")) || cap(g)-len(g) < MinSize || cap(g) < 2*MinSize {
		t.Errorf("Grow: %q, cap %d; want hello and room for %d, at least twice the old capacity", g, cap(g), MinSize)
	}
}

func BenchmarkGetPut(b *testing.B) {
	for b.Loop() {
		Put(Get(5_000_000))
	}
}

// TestKeptBound puts back more than KeepBytes: the free lists never hold more than that, and what
// they hold is what Get hands out first.
func TestKeptBound(t *testing.T) {
	t.Parallel()
	for range 2 * KeepBytes / MaxPooled {
		Put(make([]byte, 0, MaxPooled))
		keptMu.Lock()
		over := keptBytes > KeepBytes
		keptMu.Unlock()
		if over {
			t.Fatalf("free lists hold %d bytes, more than %d", keptBytes, KeepBytes)
		}
	}
	if b := Get(MaxPooled); cap(b) != MaxPooled {
		t.Errorf("Get(MaxPooled): cap %d", cap(b))
	}
}
