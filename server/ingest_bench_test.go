//go:build linux

package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// Bulk ingest, server CPU per GB next to its reference. Each side runs in a child process (this
// test binary again, TestIngestChild), so that its CPU time, read from /proc, is the server's
// alone and not the sending client's:
//
//   - kvs: a Server on an FS store; the body is PutMedia of 40 fragments of 2 s at 20 Mbit/s
//     (5 MB each, 60 frames: a keyframe 9× a delta frame; 200 MB in all, like the 80 s 1080p file
//     of scripts/perf.sh), sent in 1 MiB HTTP chunks as `kvs put-media` sends it, and the op
//     ends with the 40th PERSISTED ack;
//   - ref: a bare net/http handler that copies the same body to a file in 1 MiB reads and
//     fdatasyncs it after every 5 MB written (as many fdatasyncs as kvs has fragments) and at
//     the end, then answers 200.
//
// One op sends the body to both, in alternating order, so both see the same machine. Reported:
// cpu-s/GB of each and their ratio (kvs over ref). Linux only (/proc, fdatasync).
// KVS_INGEST_CPUPROFILE=/tmp/ingest-%k.prof writes each child's CPU profile (%k: kvs or ref). Run:
//
//	go test -run '^$' -bench IngestCPU -benchtime 5x ./server/
func BenchmarkIngestCPU(b *testing.B) {
	body, frags := ingestBody(40, 60, 5_000_000)
	kvs := startIngestChild(b, "kvs")
	ref := startIngestChild(b, "ref")
	kvs.createStream(b)
	var cpuKVS, cpuRef float64
	var readsKVS, readsRef int64   // read(2) calls
	var faultsKVS, faultsRef int64 // minor page faults
	// One op of each side first, not measured: a server that has run a while has its buffer pool
	// filled (the first ops fault in the pool's buffers, up to bufpool.KeepBytes; 14 faults per
	// MB over eight ops without this, 1 for the reference) and its files and index created.
	for _, c := range []*ingestChild{kvs, ref} {
		c.send(b, body, frags)
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := range b.N {
		sides := []*ingestChild{kvs, ref}
		if i%2 == 1 {
			sides[0], sides[1] = ref, kvs
		}
		for _, c := range sides {
			t0, r0, f0 := c.cpu(b), c.reads(b), c.faults(b)
			c.send(b, body, frags)
			used, reads, faults := c.cpu(b)-t0, c.reads(b)-r0, c.faults(b)-f0
			if c == kvs {
				cpuKVS += used
				readsKVS += reads
				faultsKVS += faults
			} else {
				cpuRef += used
				readsRef += reads
				faultsRef += faults
			}
		}
	}
	b.StopTimer()
	gb := float64(b.N) * float64(len(body)) / 1e9
	b.ReportMetric(cpuKVS/gb, "kvs-cpu-s/GB")
	b.ReportMetric(cpuRef/gb, "ref-cpu-s/GB")
	if cpuRef > 0 {
		b.ReportMetric(cpuKVS/cpuRef, "kvs/ref")
	}
	mb := gb * 1000
	b.ReportMetric(float64(readsKVS)/mb, "kvs-reads/MB")
	b.ReportMetric(float64(readsRef)/mb, "ref-reads/MB")
	b.ReportMetric(float64(faultsKVS)/mb, "kvs-faults/MB")
	b.ReportMetric(float64(faultsRef)/mb, "ref-faults/MB")
}

// ingestBody is a PutMedia body of n fragments of frames frames and about fragBytes bytes each,
// 30 fps, ABSOLUTE timecodes from baseMillis, and its fragment count.
func ingestBody(n, frames, fragBytes int) ([]byte, int) {
	delta := fragBytes / (frames - 1 + 9)
	data := make([]byte, 9*delta)
	for i := range data {
		data[i] = byte(i * 7)
	}
	body := benchHeader()
	fs := make([]mkv.Frame, frames)
	for f := range n {
		tc := int64(baseMillis) + int64(f*frames)*1000/30
		for k := range fs {
			size := delta
			if k == 0 {
				size = 9 * delta
			}
			fs[k] = mkv.Frame{Track: 1, Timecode: tc + int64(k)*1000/30, Keyframe: k == 0, Data: data[:size]}
		}
		var err error
		if body, err = mkv.AppendCluster(body, tc, fs); err != nil {
			panic(err)
		}
	}
	return body, n
}

type ingestChild struct {
	kind string
	url  string
	cmd  *exec.Cmd
	hc   *http.Client
}

func startIngestChild(b *testing.B, kind string) *ingestChild {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestIngestChild$", "-test.count", "1") //nolint:gosec // this test binary
	cmd.Env = append(os.Environ(), "KVS_INGEST_CHILD="+kind, "KVS_INGEST_DIR="+b.TempDir())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the child returns when its stdin closes
		t := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
		_ = cmd.Wait()
		t.Stop()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("%s child: %v", kind, err)
	}
	return &ingestChild{kind: kind, url: strings.TrimSpace(line), cmd: cmd,
		hc: &http.Client{Transport: &http.Transport{DisableCompression: true, WriteBufferSize: 1 << 20}}}
}

// stat returns the fields of the child's /proc/PID/stat after the command name, which is in
// parentheses: the line's 3rd field is stat's 0th.
func (c *ingestChild) stat(b *testing.B) []string {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	return strings.Fields(string(st[bytes.LastIndexByte(st, ')')+2:]))
}

// faults returns the child's minor page faults so far (the line's 10th field): a first touch of
// memory the process got from the kernel, or got back after returning it.
func (c *ingestChild) faults(b *testing.B) int64 {
	b.Helper()
	n, err := strconv.ParseInt(c.stat(b)[7], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// cpu returns the child's user+system CPU time so far, in seconds (clock ticks of 10 ms): the
// line's 14th and 15th fields.
func (c *ingestChild) cpu(b *testing.B) float64 {
	b.Helper()
	f := c.stat(b)
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	sys, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	return float64(ut+sys) / 100
}

// reads returns the child's read(2)-family calls so far (syscr of /proc/PID/io).
func (c *ingestChild) reads(b *testing.B) int64 {
	b.Helper()
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", c.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(io)) {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no syscr in /proc/%d/io", c.cmd.Process.Pid)
	return 0
}

func (c *ingestChild) createStream(b *testing.B) {
	b.Helper()
	resp, err := c.hc.Post(c.url+"/createStream", "application/json",
		strings.NewReader(`{"StreamName":"ingest","MediaType":"video/h264","DataRetentionInHours":24}`))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("create stream: %d", resp.StatusCode)
	}
}

// send puts body and waits until it is durable: every PERSISTED ack (kvs) or the 200 (ref).
func (c *ingestChild) send(b *testing.B, body []byte, frags int) {
	b.Helper()
	req, err := http.NewRequestWithContext(b.Context(), http.MethodPost, c.url+"/putMedia", mibChunks{body})
	if err != nil {
		b.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("x-amzn-stream-name", "ingest")
	req.Header.Set("x-amzn-fragment-timecode-type", "ABSOLUTE")
	resp, err := c.hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: status %d, %v", c.kind, resp.StatusCode, err)
	}
	if c.kind == "kvs" {
		if n := bytes.Count(out, []byte(`"PERSISTED"`)); n != frags {
			b.Fatalf("%d PERSISTED acks, want %d: %.300s", n, frags, out)
		}
	}
}

// mibChunks is a request body the transport sends in 1 MiB chunks (its WriteTo), as `kvs
// put-media` does.
type mibChunks struct{ b []byte }

func (m mibChunks) Read([]byte) (int, error) { panic("WriteTo is used") }

func (m mibChunks) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for b := m.b; len(b) > 0; {
		k, err := w.Write(b[:min(len(b), 1<<20)])
		n += int64(k)
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}

// TestIngestChild is BenchmarkIngestCPU's server process; without KVS_INGEST_CHILD it does
// nothing. It prints its URL and serves until its stdin closes.
func TestIngestChild(t *testing.T) {
	kind := os.Getenv("KVS_INGEST_CHILD")
	if kind == "" {
		return
	}
	dir := os.Getenv("KVS_INGEST_DIR")
	if path := os.Getenv("KVS_INGEST_CPUPROFILE"); path != "" {
		f, err := os.Create(strings.ReplaceAll(path, "%k", kind))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var h http.Handler
	switch kind {
	case "kvs":
		// The store's written cache at 256 MiB: like the reference's one rewritten 200 MB file,
		// the pages it keeps stop growing within the first op, as they do on a server that has
		// run a while. The default 1 GiB takes five ops to fill, and on this project's VM growing
		// the page cache costs a host fault per new page, which the reference never pays (README,
		// Performance II): the measured CPU then depended on the VM's free memory, 0.8 or 1.6
		// s/GB in one session.
		st, err := store.OpenFS(dir, store.FSOptions{WrittenCacheBytes: 256 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		srv, err := New(Config{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		h = srv
	case "ref":
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := refIngest(r.Body, dir+"/ref.bin", 5_000_000); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		})
	default:
		t.Fatalf("KVS_INGEST_CHILD=%s", kind)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	fmt.Printf("http://%s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(ctx)
}

// refIngest is the reference handler's work: body to a new file in 1 MiB reads, fdatasync
// after every syncEvery bytes and at the end.
func refIngest(body io.Reader, path string, syncEvery int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	unsynced := 0
	for {
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return err
			}
			if unsynced += n; unsynced >= syncEvery {
				if err := syscall.Fdatasync(int(f.Fd())); err != nil {
					return err
				}
				unsynced = 0
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	return syscall.Fdatasync(int(f.Fd()))
}
