// Package storetest checks that a store.Store keeps the contract written in the store package's
// documentation, as testing/fstest.TestFS does for an fs.FS. A backend runs it from its tests:
//
//	func TestPostgres(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
//			ns := newSchemaAndPrefix(t) // a fresh PostgreSQL schema and S3 prefix, dropped by t.Cleanup
//			open := func(t *testing.T) store.Store { return openCluster(t, ns) }
//			return open(t), open
//		})
//	}
//
// Each case of the suite is a subtest that calls the Opener once, with the subtest's t. The
// Opener returns a store on a new, empty namespace (no streams) and, when the backend can do it,
// reopen: a function that opens another store on that same namespace, as a restarted process
// would. The suite calls reopen only after it has closed the previous store, and closes every
// store it gets, so cleanups the Opener registers with t.Cleanup (removing a directory, dropping
// a schema) run after the last Close. A store that cannot be reopened (store.Mem) returns a nil
// reopen, and the cases about surviving a restart skip.
//
// Cases run in parallel (t.Parallel), each on its own namespace, so the Opener is called from
// several goroutines at once. They never read the wall clock's time for retention: stored
// fragments carry server times around 2026-11-25T12:00:00Z and the suite passes its own now to
// EnforceRetention, so a store must take retention's time from that argument alone. One case
// appends a record of store.MaxRecordSize+1 bytes (64 MiB) to see it refused.
//
// Run's cases cover the registry (create, get, list, atomic update, delete with a version
// check), fragment numbering, synchronous and asynchronous appends and their refusals, reads
// (Fragment, Open, AppendPayload, Range, TimeRange, First, Last), Prepare, concurrent writers
// and readers on different streams (meaningful under -race), retention, the kvs:max-bytes cap,
// Ready, Stats, Close, and, with reopen,
// what must survive a restart. A backend's own tests add what the contract leaves to it (crash
// recovery, file layout, leases).
package storetest

import (
	"strings"
	"testing"

	"github.com/openkvs/kvs/server/store"
)

// Opener opens a store on a fresh, empty namespace for one test; see the package documentation.
// reopen, nil when unsupported, opens the same namespace again after the suite closed the
// previous store. Both report failures to the t they are given (t.Fatal).
type Opener func(t *testing.T) (s store.Store, reopen func(t *testing.T) store.Store)

// storeCase is one case of the suite: st is the store from the Opener, which Run closes after
// the case; reopen is the Opener's (nil when unsupported).
type storeCase struct {
	name string
	run  func(t *testing.T, st store.Store, reopen func(*testing.T) store.Store)
}

// cases lists the suite; the files of this package hold one theme each.
func cases() []storeCase {
	return []storeCase{
		{"Registry", only(testRegistry)},
		{"UpdateAtomic", only(testUpdateAtomic)},
		{"DeleteVersion", only(testDeleteVersion)},
		{"DeleteRecreate", only(testDeleteRecreate)},
		{"Missing", only(testMissing)},
		{"NextNumber", only(testNextNumber)},
		{"AppendRead", only(testAppendRead)},
		{"AppendErrors", only(testAppendErrors)},
		{"AppendAsync", only(testAppendAsync)},
		{"AppendChecksum", only(testAppendChecksum)},
		{"AppendPayload", only(testAppendPayload)},
		{"Prepare", only(testPrepare)},
		{"TimeRange", only(testTimeRange)},
		{"Retention", only(testRetention)},
		{"StreamCap", only(testStreamCap)},
		{"Ready", only(testReady)},
		{"Stats", only(testStats)},
		{"Concurrent", only(testConcurrent)},
		{"ConcurrentAsync", only(testConcurrentAsync)},
		{"Closed", only(testClosed)},
		{"ReopenData", testReopenData},
		{"ReopenNumbers", testReopenNumbers},
		{"ReopenRetention", testReopenRetention},
		{"ReopenDelete", testReopenDelete},
	}
}

func only(fn func(t *testing.T, st store.Store)) func(*testing.T, store.Store, func(*testing.T) store.Store) {
	return func(t *testing.T, st store.Store, _ func(*testing.T) store.Store) { fn(t, st) }
}

// Run runs the behaviour suite over the stores open makes, one subtest per case.
func Run(t *testing.T, open Opener) {
	t.Helper()
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st, reopen := open(t)
			if st == nil {
				t.Fatal("Opener returned a nil store")
			}
			t.Cleanup(func() {
				if err := st.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			if strings.HasPrefix(c.name, "Reopen") && reopen == nil {
				t.Skip("the store cannot be reopened (nothing survives Close)")
			}
			c.run(t, st, reopen)
		})
	}
}

// restart closes st and opens its namespace again with reopen (not nil: Run skips the Reopen
// cases without it). The new store is closed when the test ends.
func restart(t *testing.T, st store.Store, reopen func(*testing.T) store.Store) store.Store {
	t.Helper()
	if err := st.Close(); err != nil {
		t.Fatalf("Close before reopening: %v", err)
	}
	next := reopen(t)
	if next == nil {
		t.Fatal("reopen returned a nil store")
	}
	t.Cleanup(func() {
		if err := next.Close(); err != nil {
			t.Errorf("Close of the reopened store: %v", err)
		}
	})
	return next
}
