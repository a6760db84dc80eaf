package server

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

func (s *vanishStore) Open(ctx context.Context, stream string, n uint64) (io.ReadCloser, store.FragmentMeta, error) {
	if n == s.gone.Load() {
		return nil, store.FragmentMeta{}, store.ErrFragmentNotFound
	}
	return s.Store.Open(ctx, stream, n)
}

// newPacedMediaEnv is newMediaEnvStore on the connections kvs server gives net/http (Listener,
// ConnContext): paced, and sending file sections with sendfile.
func newPacedMediaEnv(t testing.TB, st store.Store) *mediaEnv {
	t.Helper()
	srv, err := New(Config{Store: st, RetentionInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener = Listener(ts.Listener)
	ts.Config.ConnContext = ConnContext
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
		st.Close()
	})
	return &mediaEnv{srv: srv, ts: ts, store: st}
}

// A GetMediaForFragmentList request with client.HeaderSendfile, on a kvs server's connection, gets
// the stored payloads by sendfile(2): the same bytes as without it, the same Content-Length, an
// error chunk padded to its place for a fragment that vanished after the check, and for a
// payload whose CRC does not match an INTERNAL_ERROR chunk instead of its bytes (the CRC is
// checked before sendfile sends anything). The memory store answers the same, through copies.
func TestGetMediaForFragmentListSendfile(t *testing.T) {
	t.Parallel()
	c := loadClip(t, "h264.mkv")
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var st store.Store = store.NewMem()
			if kind == "fs" {
				fsst, err := store.OpenFS(dir, store.FSOptions{})
				if err != nil {
					t.Fatal(err)
				}
				st = fsst
			}
			vs := &vanishStore{Store: st}
			e := newPacedMediaEnv(t, vs)
			e.createStream(t, "cam", 1)
			var payloads [][]byte
			for i := range 3 {
				payloads = append(payloads, append(c.header(), c.cluster(t, i, baseMillis)...))
			}
			nums := storeDirect(t, vs, "cam", payloads...)
			in := make([]string, len(nums))
			for i, n := range nums {
				in[i] = formatFragmentNumber(n)
			}
			get := func(sendfile bool) []byte {
				t.Helper()
				var hdr []string
				if sendfile {
					hdr = []string{client.HeaderSendfile, "1"}
				}
				resp := e.post(t, t.Context(), "/getMediaForFragmentList", map[string]any{"StreamName": "cam", "Fragments": in}, hdr...)
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || err != nil || resp.ContentLength != int64(len(b)) {
					t.Fatalf("sendfile %v: status %d, Content-Length %d, %d bytes read (%v)", sendfile, resp.StatusCode, resp.ContentLength, len(b), err)
				}
				return b
			}

			copied := get(false)
			before := sentByFile.Load()
			sent := get(true)
			byFile := sentByFile.Load() - before
			if !bytes.Equal(sent, copied) {
				t.Fatalf("the answer by sendfile (%d bytes) differs from the copied one (%d bytes)", len(sent), len(copied))
			}
			var stored int64
			for _, p := range payloads {
				stored += int64(len(p))
			}
			// (Only a lower bound: the count is the process's, and other tests send too.)
			if kind == "fs" && byFile < stored {
				t.Errorf("%d bytes sent by sendfile, want the %d stored", byFile, stored)
			}
			frags := readFragments(t, bytes.NewReader(sent))
			if len(frags) != 3 {
				t.Fatalf("%d chunks, want 3", len(frags))
			}
			for i, f := range frags {
				if len(f.Frames) != len(c.frags[i]) {
					t.Errorf("chunk %d: %d frames, want %d", i, len(f.Frames), len(c.frags[i]))
				}
			}

			// checkError gets the list by sendfile and wants chunk 1 to be the error chunk code,
			// padded: the other chunks as before, in place.
			checkError := func(what, code string) {
				t.Helper()
				b := get(true)
				if len(b) != len(copied) {
					t.Fatalf("%s: %d bytes, want %d", what, len(b), len(copied))
				}
				frags := readFragments(t, bytes.NewReader(b))
				if len(frags) != 3 {
					t.Fatalf("%s: %d chunks, want 3", what, len(frags))
				}
				for i, f := range frags {
					ce := client.ChunkErrorOf(f)
					switch {
					case i == 1 && (ce == nil || ce.Code != code || tag(t, f, mkv.TagFragmentNumber) != in[1]):
						t.Errorf("%s: chunk 1: %+v, want the error chunk %s of %s", what, ce, code, in[1])
					case i != 1 && (ce != nil || len(f.Frames) != len(c.frags[i])):
						t.Errorf("%s: chunk %d: error %+v, %d frames, want %d", what, i, ce, len(f.Frames), len(c.frags[i]))
					}
				}
			}
			vs.gone.Store(nums[1])
			checkError("fragment 1 gone", "FRAGMENT_NOT_FOUND")
			vs.gone.Store(0)
			if kind != "fs" {
				return
			}
			// One byte of fragment 1's payload flipped on disk (records: a 48-byte header, then
			// the payload).
			var seg string
			_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && strings.HasSuffix(p, ".seg") {
					seg = p
				}
				return nil
			})
			f, err := os.OpenFile(seg, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			at := int64(48+len(payloads[0])+48) + int64(len(payloads[1])/2)
			bad := []byte{0}
			if _, err := f.ReadAt(bad, at); err == nil {
				bad[0] ^= 0x40
				_, err = f.WriteAt(bad, at)
			}
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			checkError("fragment 1 corrupt", "INTERNAL_ERROR")
		})
	}
}

// The request header that asks for sendfile is client's (server does not import client).
func TestHeaderSendfileIsClients(t *testing.T) {
	t.Parallel()
	if http.CanonicalHeaderKey(headerSendfile) != http.CanonicalHeaderKey(client.HeaderSendfile) {
		t.Fatalf("server asks %q, client sends %q", headerSendfile, client.HeaderSendfile)
	}
}
