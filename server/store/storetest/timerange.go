package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// testTimeRange checks TimeRange's inclusive bounds, its (timestamp, number) order, the zero
// producer time sorting first, and paging with a cursor at every page size.
func testTimeRange(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	// Server times: 0,1,1,1,2,...; producer times run backwards so the two orders differ.
	var all []store.FragmentMeta
	for i := range 12 {
		sec := i - 2
		if i < 4 {
			sec = min(i, 1)
		}
		server := base.Add(time.Duration(sec) * time.Second)
		producer := base.Add(-time.Duration(i) * time.Second)
		if i == 6 {
			producer = time.Time{} // unknown producer time sorts first
		}
		all = append(all, appendOne(t, st, "s", server, producer, 5))
	}
	inRange := func(kind store.TimeKind, lo, hi time.Time) []store.FragmentMeta {
		var out []store.FragmentMeta
		for _, m := range all {
			if ts := timeOf(m, kind); !ts.Before(lo) && !ts.After(hi) {
				out = append(out, m)
			}
		}
		slices.SortFunc(out, timeOrder(kind))
		return out
	}
	far := base.Add(-time.Hour)
	tests := []struct {
		name   string
		kind   store.TimeKind
		lo, hi time.Time
	}{
		{"server all", store.ServerTime, far, base.Add(time.Hour)},
		{"server inclusive", store.ServerTime, base.Add(time.Second), base.Add(3 * time.Second)},
		{"server one instant", store.ServerTime, base.Add(time.Second), base.Add(time.Second)},
		{"server empty", store.ServerTime, base.Add(time.Hour), base.Add(2 * time.Hour)},
		{"server inverted", store.ServerTime, base.Add(3 * time.Second), base},
		{"producer all", store.ProducerTime, time.Time{}, base.Add(time.Hour)},
		{"producer inclusive", store.ProducerTime, base.Add(-5 * time.Second), base.Add(-2 * time.Second)},
		{"producer excluding unknown", store.ProducerTime, far, base},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := inRange(tc.kind, tc.lo, tc.hi)
			got, err := st.TimeRange(ctx, "s", tc.kind, tc.lo, tc.hi, store.Cursor{}, 0)
			if err != nil {
				t.Fatal(err)
			}
			checkMetas(t, "no limit", got, want)
			for _, limit := range []int{1, 2, 5} {
				var pages []store.FragmentMeta
				var cur store.Cursor
				for range 100 {
					page, err := st.TimeRange(ctx, "s", tc.kind, tc.lo, tc.hi, cur, limit)
					if err != nil {
						t.Fatal(err)
					}
					if len(page) > limit {
						t.Fatalf("limit %d: page of %d", limit, len(page))
					}
					if len(page) == 0 {
						break
					}
					pages = append(pages, page...)
					l := page[len(page)-1]
					cur = store.Cursor{Time: timeOf(l, tc.kind), Number: l.Number}
				}
				checkMetas(t, fmt.Sprintf("pages of %d", limit), pages, want)
			}
		})
	}
}
