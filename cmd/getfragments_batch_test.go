package cmd

import (
	"fmt"
	"slices"
	"testing"
)

func TestMakeBatches(t *testing.T) {
	t.Parallel()
	nums := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprint(i))
		}
		return out
	}
	lens := func(b [][]string) []int {
		var out []int
		for _, x := range b {
			out = append(out, len(x))
		}
		return out
	}
	sizes := func(n int, each int64) []int64 {
		s := make([]int64, n)
		for i := range s {
			s[i] = each
		}
		return s
	}
	for _, c := range []struct {
		name     string
		n        int
		sizes    []int64
		parallel int
		want     []int
	}{
		{"even share", 16, nil, 8, []int{2, 2, 2, 2, 2, 2, 2, 2}},
		{"at most maxBatch", 25, nil, 1, []int{10, 10, 5}},
		{"5 MB fragments: one per request", 4, sizes(4, 5<<20), 1, []int{1, 1, 1, 1}},
		{"1 MB fragments: 4 MiB per request", 10, sizes(10, 1<<20), 1, []int{4, 4, 2}},
		{"small fragments: count decides", 30, sizes(30, 1000), 2, []int{10, 10, 10}},
		{"one", 1, nil, 8, []int{1}},
	} {
		b := makeBatches(nums(c.n), c.sizes, c.parallel)
		if got := lens(b); !slices.Equal(got, c.want) {
			t.Errorf("%s: batch sizes %v, want %v", c.name, got, c.want)
		}
		if got := slices.Concat(b...); !slices.Equal(got, nums(c.n)) {
			t.Errorf("%s: batches %v lose or reorder numbers", c.name, b)
		}
	}
}

// Without sizes (fragment numbers given), batchPlan asks for one fragment first, cuts nothing
// more until that answer's length is known, then cuts batches of batchBytes at the biggest
// fragment seen, and holds no more than windowBytes beyond --parallel batches.
func TestBatchPlanLearnsSizes(t *testing.T) {
	t.Parallel()
	numbers := make([]string, 100)
	for i := range numbers {
		numbers[i] = fmt.Sprint(i)
	}
	p := newBatchPlan(numbers, nil, 2, 4)
	first, _ := p.tryTake()
	if first == nil || len(first.numbers) != 1 {
		t.Fatalf("first batch %v, want one fragment", first)
	}
	if b, done := p.tryTake(); b != nil || done {
		t.Fatalf("a second batch (%v) before the first answer's length is known", b)
	}
	p.learn(first, 1000) // small fragments: as many as a batch takes
	if b, _ := p.tryTake(); b == nil || len(b.numbers) != maxBatch {
		t.Fatalf("batch after a 1000-byte fragment: %v, want %d fragments", b, maxBatch)
	}
	p.learn(first, 12<<20) // a 12 MiB fragment (a retry that answered more): one a batch
	var held []*heldBatch
	for {
		b, _ := p.tryTake()
		if b == nil {
			break
		}
		if len(b.numbers) != 1 {
			t.Fatalf("batch after a 12 MiB fragment: %d fragments, want 1", len(b.numbers))
		}
		held = append(held, b)
	}
	// Beyond --parallel (2) batches, windowBytes allows one 12 MiB batch more (36 MiB held), not
	// two, though the window (4) would.
	if p.batches != 3 || len(held) != 1 {
		t.Fatalf("%d batches held (%d of 12 MiB cut), want 3", p.batches, len(held))
	}
	p.release(first) // written: 12 MiB and the 10 small fragments held, one more fits
	if b, _ := p.tryTake(); b == nil {
		t.Fatalf("no batch cut with %d MiB held", p.held>>20)
	}
	if b, _ := p.tryTake(); b != nil {
		t.Fatalf("a batch cut with %d MiB held", p.held>>20)
	}
}
