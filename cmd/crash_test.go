package cmd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/internal/testutil/backends"
	"github.com/openkvs/kvs/mkv"
)

// The process tests run kvs as this test binary itself, under the name kvs (testscript's way):
// TestMain runs Main when the binary is started as kvs, so no second binary is linked (that link
// was 3–4 s of CPU at the start of every run: scripts/test-cpu.sh). cmd/kvs's main is Main and
// nothing else.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// asKVS marks a process of this test binary that runs as kvs, for the children it starts
// through os.Executable (kvs bench's server), whose name is the test binary's.
const asKVS = "KVS_TEST_BINARY_IS_KVS"

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "kvs" || os.Getenv(asKVS) == "1" {
		os.Setenv(asKVS, "1")
		os.Exit(Main())
	}
	testutil.IsolateAWS()
	testutil.WaitingTests(16) // kvs processes, cameras and producers running in real time, outages
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	backends.Stop() // the cluster tests' PostgreSQL and S3 server
	os.Exit(code)
}

// kvsBinary returns the path of a kvs command for child processes: a link named kvs to this
// test binary, made once per run.
func kvsBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		var self string
		if self, binErr = os.Executable(); binErr != nil {
			return
		}
		if binDir, binErr = os.MkdirTemp("", "kvs-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "kvs")
		binErr = os.Symlink(self, binPath)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// kvsProcess is a `kvs server` child process.
type kvsProcess struct {
	cmd      *exec.Cmd
	Endpoint string
	stderr   *lockedBuffer
	done     chan struct{} // closed when it exited
	exitErr  error
}

// startKVS runs `kvs server --listen 127.0.0.1:0 args...` and waits for its endpoint line.
func startKVS(t *testing.T, args ...string) *kvsProcess {
	t.Helper()
	return startKVSEnv(t, nil, args...)
}

// startKVSEnv is startKVS with more environment variables.
func startKVSEnv(t *testing.T, env []string, args ...string) *kvsProcess {
	t.Helper()
	cmd := exec.Command(kvsBinary(t), append([]string{"server", "--listen", "127.0.0.1:0"}, args...)...)
	home := t.TempDir()
	cmd.Env = append([]string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "XDG_DATA_HOME=" + home, "PATH=/usr/bin:/bin"}, env...)
	p := &kvsProcess{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			<-p.done
			t.Fatalf("kvs server printed no endpoint (%v); stderr:\n%s", p.exitErr, p.stderr)
		}
		p.Endpoint = strings.TrimSpace(l)
	case <-time.After(30 * time.Second):
		t.Fatalf("kvs server did not start in 30 s; stderr:\n%s", p.stderr)
	}
	// The start log is written before the endpoint line, but through another pipe: wait for it.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.stderr.String(), "kvs server listening"); {
		if time.Now().After(deadline) {
			t.Fatalf("no start log line; stderr:\n%s", p.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return p
}

// kill SIGKILLs the process and waits for it.
func (p *kvsProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// crashFragment is fragment i of the crash test stream: cluster timecode base+100*i ms, a keyframe
// and two more frames whose bytes derive from the timecode, 200 to 6000 bytes each.
func crashFragment(i int, base int64) *mkv.Fragment {
	tc := base + 100*int64(i)
	f := &mkv.Fragment{DocType: "matroska", TimecodeScale: mkv.DefaultTimecodeScale, Tracks: crashTracks, Timecode: tc}
	for k := range 3 {
		rng := rand.New(rand.NewPCG(uint64(tc), uint64(k)))
		data := make([]byte, 200+rng.IntN(5800))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		f.Frames = append(f.Frames, mkv.Frame{Track: 1, Timecode: tc + 33*int64(k), Keyframe: k == 0, Data: data})
	}
	return f
}

var crashTracks = []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC",
	CodecPrivate: []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 4, 0x68, 0xee, 0x3c, 0x80}, Width: 640, Height: 480}}

// persistedAck is one PERSISTED ack: the fragment number the server gave a cluster timecode.
type persistedAck struct {
	number   string
	timecode int64
}

// crashUpload streams fragments from index first, one every cadence, on one raw PutMedia
// connection until ctx ends, the connection breaks or enough PERSISTED acks came (0: no such
// end), and returns the PERSISTED acks it got and the index after the last fragment written.
func crashUpload(ctx context.Context, endpoint, stream string, base int64, first int, cadence time.Duration, enough int) ([]persistedAck, int) {
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/putMedia", pr)
	if err != nil {
		panic(err)
	}
	req.Header.Set("x-amzn-stream-name", stream)
	req.Header.Set("x-amzn-fragment-timecode-type", "ABSOLUTE")
	req.Header.Set("x-amzn-producer-start-timestamp", "0")
	var mu sync.Mutex
	next := first
	go func() {
		defer pw.Close()
		hdr := mkv.AppendTracks(mkv.AppendInfo(mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, "matroska")), mkv.DefaultTimecodeScale, "crash"), crashTracks)
		if _, err := pw.Write(hdr); err != nil {
			return
		}
		t := time.NewTicker(cadence)
		defer t.Stop()
		for i := first; ; i++ {
			f := crashFragment(i, base)
			b, err := mkv.AppendCluster(nil, f.Timecode, f.Frames)
			if err != nil {
				panic(err)
			}
			if _, err := pw.Write(b); err != nil {
				return
			}
			mu.Lock()
			next = i + 1
			mu.Unlock()
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	var acks []persistedAck
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_ = client.ReadAcks(resp.Body, func(a client.Ack) error {
			if a.EventType == client.AckPersisted {
				acks = append(acks, persistedAck{a.FragmentNumber, a.FragmentTimecode})
			}
			if enough > 0 && len(acks) >= enough {
				return errors.New("enough acks")
			}
			return nil
		})
		resp.Body.Close()
	}
	pr.CloseWithError(errors.New("upload over"))
	mu.Lock()
	defer mu.Unlock()
	return acks, next
}

// verifyStored checks that every acknowledged fragment is listed and reads back intact with
// GetMediaForFragmentList, and that numbers and timecodes agree with the acks.
func verifyStored(t *testing.T, p *kvsProcess, stream string, base int64, acked map[string]int64) int {
	t.Helper()
	endpoint := p.Endpoint
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", p.stderr)
		}
	}()
	ctx := t.Context()
	c, err := client.New(ctx, client.Config{Endpoint: endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.ListFragments(ctx, client.ListFragmentsInput{Stream: stream})
	if err != nil {
		t.Fatalf("list fragments: %v", err)
	}
	listed := map[string]bool{}
	for _, f := range list {
		listed[f.FragmentNumber] = true
	}
	var numbers []string
	for n := range acked {
		if !listed[n] {
			t.Fatalf("PERSISTED fragment %s (timecode %d) is not listed after the restart", n, acked[n])
		}
		numbers = append(numbers, n)
	}
	slices.SortFunc(numbers, client.CompareFragmentNumbers)
	verified := 0
	for len(numbers) > 0 {
		batch := numbers[:min(len(numbers), client.MaxFragmentsPerRequest)]
		numbers = numbers[len(batch):]
		body, err := c.GetMediaForFragmentList(ctx, stream, batch)
		if err != nil {
			t.Fatalf("get media for fragment list: %v", err)
		}
		fr := mkv.NewFragmentReader(body)
		for _, n := range batch {
			f, err := fr.Next()
			if err != nil {
				t.Fatalf("fragment %s: %v", n, err)
			}
			if got, _ := f.Tag(mkv.TagFragmentNumber); got != n {
				t.Fatalf("got fragment %s, want %s", got, n)
			}
			if f.Timecode != acked[n] {
				t.Fatalf("fragment %s has timecode %d, its PERSISTED ack said %d", n, f.Timecode, acked[n])
			}
			want := crashFragment(int((f.Timecode-base)/100), base)
			if len(f.Frames) != len(want.Frames) {
				t.Fatalf("fragment %s: %d frames, want %d", n, len(f.Frames), len(want.Frames))
			}
			for k := range want.Frames {
				if !bytes.Equal(f.Frames[k].Data, want.Frames[k].Data) || f.Frames[k].Timecode != want.Frames[k].Timecode || f.Frames[k].Keyframe != want.Frames[k].Keyframe {
					t.Fatalf("fragment %s frame %d differs from what was sent", n, k)
				}
			}
			verified++
		}
		if _, err := fr.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("after %d fragments: %v, want EOF", len(batch), err)
		}
		body.Close()
	}
	return verified
}

// tearTail appends a torn record to the newest segment of the data directory, as a crash in the
// middle of a write would leave it: a prefix of a real record (or random bytes).
func tearTail(t *testing.T, dataDir string, rng *rand.Rand) int {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dataDir, "streams", "*", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment under %s: %v", dataDir, err)
	}
	slices.Sort(segs)
	last := segs[len(segs)-1]
	var junk []byte
	if rng.IntN(2) == 0 {
		whole, err := os.ReadFile(segs[0])
		if err != nil || len(whole) < 100 {
			t.Fatalf("read %s: %v", segs[0], err)
		}
		junk = whole[:48+rng.IntN(min(len(whole)-48, 4000))] // a header and part of a payload
	} else {
		junk = make([]byte, 1+rng.IntN(300))
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
	}
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(junk); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return len(junk)
}

var recoveryLine = regexp.MustCompile(`store recovery.*bytes_cut=(\d+)`)

// TestCrashSafety is the durability promise under SIGKILL: a real `kvs server` process takes a
// fast stream of small fragments and is killed at a random moment (seeded: KVS_CRASH_SEED, else
// 1), over and over (KVS_CRASH_CYCLES in all, default 20; scripts/soak.sh runs more). After each
// restart on the same data directory every fragment ever acknowledged PERSISTED must be listed and
// read back byte for byte, and the stream must take new media. Every third cycle also tears the tail of
// the newest segment as a crash in the middle of a write would; the restart must cut it and log
// the cut.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	cycles := 20
	if v := os.Getenv("KVS_CRASH_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("KVS_CRASH_CYCLES=%q", v)
		}
		cycles = n
	}
	seed := uint64(1)
	if v := os.Getenv("KVS_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("KVS_CRASH_SEED=%q", v)
		}
		seed = n
	}
	// The cycles are split between two data directories, each with its server, crashed at once:
	// the same cycles in half the time, and two servers' fdatasyncs in flight at each kill. The
	// two subtests run side by side in this test's place, not as parallel subtests: those wait
	// for a free place behind every other test of the package, which made this test end the
	// package's run.
	var wg sync.WaitGroup
	for i := range 2 {
		if n := (cycles + 1 - i) / 2; n > 0 {
			wg.Go(func() {
				t.Run(fmt.Sprintf("dir%d", i+1), func(t *testing.T) { crashCycles(t, seed+uint64(i)<<32, n) })
			})
		}
	}
	wg.Wait()
}

// crashCycles is TestCrashSafety on one data directory: seeded by seed, cycles kills.
func crashCycles(t *testing.T, seed uint64, cycles int) {
	rng := rand.New(rand.NewPCG(seed, 42))
	dataDir := t.TempDir()
	const stream = "crash"
	const base = int64(1_700_000_000_000)
	acked := map[string]int64{}
	next := 0
	var torn, cutLogged, verified int
	start := time.Now()

	p := startKVS(t, "--data-dir", dataDir)
	c, err := client.New(t.Context(), client.Config{Endpoint: p.Endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Control.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String(stream), DataRetentionInHours: aws.Int32(24)}); err != nil {
		t.Fatal(err)
	}
	for cycle := range cycles {
		killAfter := time.Duration(50+rng.IntN(400)) * time.Millisecond
		ctx, cancel := context.WithCancel(t.Context())
		type result struct {
			acks []persistedAck
			next int
		}
		res := make(chan result, 1)
		go func() {
			a, n := crashUpload(ctx, p.Endpoint, stream, base, next, 10*time.Millisecond, 0)
			res <- result{a, n}
		}()
		time.Sleep(killAfter)
		p.kill()
		r := <-res
		cancel()
		if len(r.acks) == 0 && cycle > 0 {
			t.Logf("cycle %d: no PERSISTED ack within %v", cycle, killAfter)
		}
		for _, a := range r.acks {
			acked[a.number] = a.timecode
		}
		next = r.next + 1 // a fragment may have been written whole but not acked: never reuse its timecode
		if cycle%3 == 2 {
			tearTail(t, dataDir, rng)
			torn++
		}

		p = startKVS(t, "--data-dir", dataDir)
		logs := p.stderr.String()
		m := recoveryLine.FindStringSubmatch(logs)
		if m == nil {
			t.Fatalf("cycle %d: no store recovery line in the server log:\n%s", cycle, logs)
		}
		if cycle%3 == 2 {
			if m[1] == "0" {
				t.Fatalf("cycle %d: a torn tail was added but the recovery cut nothing:\n%s", cycle, logs)
			}
			cutLogged++
		}
		verified = verifyStored(t, p, stream, base, acked)
		t.Logf("cycle %d: killed after %v, %d PERSISTED this cycle, %d in all verified", cycle, killAfter, len(r.acks), verified)
	}

	// The stream takes new media after the last restart: five fragments PERSISTED.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	acks, _ := crashUpload(ctx, p.Endpoint, stream, base, next, 10*time.Millisecond, 5)
	cancel()
	if len(acks) < 5 {
		t.Fatalf("%d PERSISTED acks within 10 s after the last restart, want 5; server log:\n%s", len(acks), p.stderr)
	}
	for _, a := range acks {
		acked[a.number] = a.timecode
	}
	verified = verifyStored(t, p, stream, base, acked)
	t.Logf("%d cycles in %v: %d fragments PERSISTED and verified, %d torn tails added, %d cuts logged",
		cycles, time.Since(start).Round(time.Millisecond), verified, torn, cutLogged)
}

// TestGracefulShutdown sends SIGTERM to a real `kvs server` while a producer streams and a live
// GetMedia reader waits: the server exits 0 well before its 10 s shutdown timeout, every fragment
// the server started (BUFFERING) ends PERSISTED or is named by the closing ERROR, the upload's
// last ack is ERROR 5000, the reader's response ends cleanly, and after a restart everything
// acknowledged is there.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	dataDir := t.TempDir()
	const stream = "term"
	const base = int64(1_700_000_000_000)
	p := startKVS(t, "--data-dir", dataDir)
	ctx := t.Context()
	c, err := client.New(ctx, client.Config{Endpoint: p.Endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Control.CreateStream(ctx, &kinesisvideo.CreateStreamInput{StreamName: aws.String(stream), DataRetentionInHours: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}

	// A live reader at the edge.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.Endpoint+"/getMedia",
		strings.NewReader(`{"StreamName":"`+stream+`","StartSelector":{"StartSelectorType":"NOW"}}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("getMedia: %v %v", resp, err)
	}
	readerDone := make(chan error, 1)
	var readBytes int64
	go func() {
		n, err := io.Copy(io.Discard, resp.Body)
		readBytes = n
		resp.Body.Close()
		readerDone <- err
	}()

	// A producer streaming fragments, with every ack kept.
	pr, pw := io.Pipe()
	preq, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.Endpoint+"/putMedia", pr)
	preq.Header.Set("x-amzn-stream-name", stream)
	preq.Header.Set("x-amzn-fragment-timecode-type", "ABSOLUTE")
	go func() {
		defer pw.Close()
		_, _ = pw.Write(mkv.AppendTracks(mkv.AppendInfo(mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, "matroska")), 0, "t"), crashTracks))
		for i := 0; ; i++ {
			f := crashFragment(i, base)
			b, _ := mkv.AppendCluster(nil, f.Timecode, f.Frames)
			// Half a cluster, a pause, the rest: SIGTERM often lands inside a fragment.
			if _, err := pw.Write(b[:len(b)/2]); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
			if _, err := pw.Write(b[len(b)/2:]); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	presp, err := http.DefaultClient.Do(preq)
	if err != nil || presp.StatusCode != 200 {
		t.Fatalf("putMedia: %v %v", presp, err)
	}
	acksCh := make(chan client.Ack, 10000)
	acksErr := make(chan error, 1)
	go func() {
		acksErr <- client.ReadAcks(presp.Body, func(a client.Ack) error { acksCh <- a; return nil })
		presp.Body.Close()
		close(acksCh)
	}()
	var acks []client.Ack // all of them, in order
	persisted := 0
	for a := range acksCh {
		acks = append(acks, a)
		if a.EventType == client.AckPersisted {
			if persisted++; persisted == 10 {
				break
			}
		}
	}

	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(8 * time.Second):
		t.Fatalf("server still running 8 s after SIGTERM; log:\n%s", p.stderr)
	}
	took := time.Since(start)
	if p.exitErr != nil {
		t.Fatalf("exit: %v; log:\n%s", p.exitErr, p.stderr)
	}
	if took > 5*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	select {
	case err := <-readerDone:
		if err != nil {
			t.Errorf("live GetMedia ended with %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("live GetMedia still open after the server exited")
	}

	for a := range acksCh {
		acks = append(acks, a)
	}
	buffering, final := map[string]bool{}, map[string]string{}
	acked := map[string]int64{}
	var last client.Ack
	for _, a := range acks {
		last = a
		switch a.EventType {
		case client.AckBuffering:
			buffering[a.FragmentNumber] = true
		case client.AckPersisted:
			final[a.FragmentNumber] = a.EventType
			acked[a.FragmentNumber] = a.FragmentTimecode
		case client.AckError:
			if a.FragmentNumber != "" {
				final[a.FragmentNumber] = a.EventType
			}
		}
	}
	if err := <-acksErr; err != nil {
		t.Errorf("ack stream: %v", err)
	}
	if last.EventType != client.AckError || last.ErrorID != 5000 {
		t.Errorf("last ack %+v, want ERROR 5000", last)
	}
	for n := range buffering {
		if final[n] == "" {
			t.Errorf("fragment %s was started (BUFFERING) but got neither PERSISTED nor ERROR", n)
		}
	}
	t.Logf("SIGTERM → exit 0 in %v; %d fragments PERSISTED in all (%d after the signal), last ack %+v; reader got %d bytes",
		took.Round(time.Millisecond), len(acked), len(acked)-10, last, readBytes)

	// Everything acknowledged (before and during the shutdown) survived.
	p = startKVS(t, "--data-dir", dataDir)
	verifyStored(t, p, stream, base, acked)
}
