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
