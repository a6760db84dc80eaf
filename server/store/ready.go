package store

// The FS store's readiness probe (Store.Ready).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/openkvs/kvs/internal/fsync"
)

// readyProbe prefixes the files Ready writes and removes in the data directory.
const readyProbe = ".ready-probe-"

// Ready implements Store: the data directory takes a new file, written, with room reserved for
// the next fragment (readyRoom) and fdatasynced, then removed (so a read-only or full
// filesystem, or a dead disk, shows here before an append meets it).
func (s *FS) Ready(context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	f, err := os.CreateTemp(s.dir, readyProbe)
	if err != nil {
		return fmt.Errorf("store: data directory %s cannot take new files (%w): check that its filesystem is mounted read-write, has space and belongs to the kvs user", s.dir, err)
	}
	_, err = f.Write([]byte("kvs\n"))
	if err == nil {
		err = reserve(f, s.readyRoom())
	}
	if err == nil {
		err = fsync.Data(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(f.Name()); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("store: data directory %s cannot be written (%w): check that its filesystem is mounted read-write and has space", s.dir, err)
	}
	return nil
}

// readyMinRoom is the least room Ready wants for the next fragment: a filesystem with less is
// full for video, however small the fragments appended so far.
const readyMinRoom = 1 << 20

// readyRoom is the room Ready reserves: the largest record appended since the start, at least
// readyMinRoom. A filesystem with a few hundred kB left takes the probe's 4 bytes, but
// no fragment of a camera's: every append failed with ENOSPC while Ready said ready.
func (s *FS) readyRoom() int64 { return max(s.largestRecord.Load(), readyMinRoom) }

// removeProbes removes probe files a crash left in the middle of Ready.
func removeProbes(dir string) {
	probes, _ := filepath.Glob(filepath.Join(dir, readyProbe+"*"))
	for _, p := range probes {
		_ = os.Remove(p)
	}
}
