package decode

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openkvs/kvs/mkv/codec"
)

// FFmpeg decodes by running the ffmpeg program, one process per Job (or per run, when a Job's
// pictures do not all come out): the Job's runs go in on stdin as one Annex B stream, parameter
// sets before each run and an end-of-sequence NAL unit after it; the wanted pictures come out
// scaled to the Job's size as raw full-range 4:2:0 frames, which Encode turns into images. One
// process pays ffmpeg's start-up (about 80 ms of CPU here) once for all of a Job's pictures.
//
// The process runs with -threads 1 and, on Unix, at nice 10: decoding is background work that
// must not take the CPU from ingest. It is killed when the context ends.
type FFmpeg struct {
	path string

	probe   sync.Once // Decode calls Probe once, if nobody did before
	mu      sync.Mutex
	version string
	codecs  map[codec.Codec]bool // nil until Probe: both assumed
}

// NewFFmpeg returns a decoder running the ffmpeg at path, or the one on PATH when path is "".
// It runs nothing; Probe asks the program what it is.
func NewFFmpeg(path string) (*FFmpeg, error) {
	if path == "" {
		path = "ffmpeg"
	}
	p, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("decode: ffmpeg: %w", err)
	}
	return &FFmpeg{path: p}, nil
}

// Path returns the program's path.
func (f *FFmpeg) Path() string { return f.path }

// probed holds what Probe found, per program file (path, size and modification time): the
// answers of a program do not change while its file does not, and a process that starts several
// servers (the tests, kvs bench's own server) asks once. Probes of the same file at the same time
// share one run: the first runs ffmpeg, the others wait for its answer.
var probed sync.Map // probeKey → *probeEntry

type probeKey struct {
	path  string
	size  int64
	mtime time.Time
}

type probeResult struct {
	version string
	codecs  map[codec.Codec]bool
}

// probeEntry is one program file's probe: res is set before done closes. A probe that failed is
// taken out of probed before done closes, so that a later Probe runs it again (the failure may
// have been the first caller's context).
type probeEntry struct {
	done chan struct{}
	res  probeResult
	err  error
}

// Probe runs ffmpeg -decoders, so that String names the version and Decodes answers for the
// decoders the build has (Debian's has both h264 and hevc).
func (f *FFmpeg) Probe(ctx context.Context) error {
	r, err := probe(ctx, f.path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.version, f.codecs = r.version, r.codecs
	f.mu.Unlock()
	return nil
}

// probe returns path's probeResult: from probed, from a probe of the same file already running,
// or from a run of its own.
func probe(ctx context.Context, path string) (probeResult, error) {
	st, err := os.Stat(path)
	if err != nil {
		return probeProgram(ctx, path) // says what is wrong with path
	}
	key := probeKey{path, st.Size(), st.ModTime()}
	for {
		e := &probeEntry{done: make(chan struct{})}
		v, running := probed.LoadOrStore(key, e)
		if !running {
			e.res, e.err = probeProgram(ctx, path)
			if e.err != nil {
				probed.CompareAndDelete(key, e)
			}
			close(e.done)
			return e.res, e.err
		}
		e = v.(*probeEntry)
		select {
		case <-e.done:
			if e.err == nil {
				return e.res, nil
			}
			// It failed and is gone from probed: run it again, for this caller's context.
		case <-ctx.Done():
			return probeResult{}, ctx.Err()
		}
	}
}

// probeProgram runs path -decoders once (ffmpeg's start is most of its cost): the banner on
// stderr names the version, the list on stdout the decoders.
func probeProgram(ctx context.Context, path string) (probeResult, error) {
	cmd := exec.CommandContext(ctx, path, "-decoders")
	var banner bytes.Buffer
	cmd.Stderr = &banner
	out, err := cmd.Output()
	if err != nil {
		return probeResult{}, fmt.Errorf("decode: %s -decoders: %w", path, err)
	}
	version, _, _ := strings.Cut(banner.String(), "\n")
	version = strings.TrimPrefix(version, "ffmpeg version ")
	version, _, _ = strings.Cut(version, " ")
	codecs := map[codec.Codec]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || len(fields[0]) != 6 || fields[0][0] != 'V' {
			continue
		}
		switch fields[1] {
		case "h264":
			codecs[codec.H264] = true
		case "hevc":
			codecs[codec.H265] = true
		}
	}
	return probeResult{version, codecs}, nil
}

// passthroughFlag is the option that makes ffmpeg pass every decoded picture through, neither
// dropping nor duplicating any: -fps_mode since ffmpeg 5.1, -vsync before (Ubuntu 22.04 has 4.4).
// Builds whose version does not start with a number (git builds) are taken as current.
func (f *FFmpeg) passthroughFlag(ctx context.Context) string {
	f.mu.Lock()
	known := f.version != ""
	f.mu.Unlock()
	if !known {
		f.probe.Do(func() { _ = f.Probe(ctx) })
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	major, _, _ := strings.Cut(f.version, ".")
	if n, err := strconv.Atoi(major); err == nil && n < 5 {
		return "-vsync"
	}
	return "-fps_mode"
}

// Decodes reports whether ffmpeg decodes c: H.264 and H.265, or what Probe found.
func (f *FFmpeg) Decodes(c codec.Codec) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.codecs == nil {
		return c == codec.H264 || c == codec.H265
	}
	return f.codecs[c]
}

// String names the program, with its version once probed.
func (f *FFmpeg) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.version == "" {
		return "ffmpeg (" + f.path + ")"
	}
	return "ffmpeg " + f.version + " (" + f.path + ")"
}

// Decode implements Decoder. When ffmpeg gives fewer pictures than the Job's frames (a run that
// does not decode), pictures cannot be told apart by position any more: each run is then decoded
// by a process of its own, and only the failing runs' pictures are nil.
func (f *FFmpeg) Decode(ctx context.Context, job *Job) ([][]byte, error) {
	if err := job.Validate(); err != nil {
		return nil, err
	}
	ps, err := job.parameterSets()
	if err != nil {
		return make([][]byte, len(job.Want)), nil
	}
	runs := job.runs()
	all := make([]int, len(runs)-1)
	for i := range all {
		all[i] = i
	}
	out, err := f.decodeRuns(ctx, job, ps, runs, all)
	if err == nil || ctx.Err() != nil || len(all) == 1 {
		if errors.Is(err, errPictureCount) {
			return make([][]byte, len(job.Want)), nil
		}
		return out, err
	}
	if !errors.Is(err, errPictureCount) {
		return nil, err
	}
	out = make([][]byte, len(job.Want))
	for _, r := range all {
		res, err := f.decodeRuns(ctx, job, ps, runs, []int{r})
		if errors.Is(err, errPictureCount) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for i := range out {
			if res[i] != nil {
				out[i] = res[i]
			}
		}
	}
	return out, nil
}

// errPictureCount: ffmpeg gave another number of pictures than the runs have frames.
var errPictureCount = errors.New("picture count differs from frame count")

// decodeRuns decodes the runs sel (indexes into runs, the job's run starts) in one process and
// returns the results for job.Want; wanted pictures of runs not in sel are nil.
func (f *FFmpeg) decodeRuns(ctx context.Context, job *Job, ps codec.ParameterSets, runs, sel []int) ([][]byte, error) {
	// Output positions of the selected runs, in the job's numbering and in the process's.
	var in []byte
	var selected, outs []int // selected[k]: job output position of the process's k-th picture
	pos := 0
	for r := 0; r+1 < len(runs); r++ {
		n := runs[r+1] - runs[r]
		take := false
		for _, s := range sel {
			take = take || s == r
		}
		if take {
			start := len(in)
			in = appendParameterSets(in, ps)
			var err error
			for _, fr := range job.Frames[runs[r]:runs[r+1]] {
				if in, err = appendFrame(in, fr.Data, ps.LengthSize); err != nil {
					break
				}
			}
			if err != nil {
				in = in[:start] // a malformed frame: its run gives no picture
			} else {
				in = append(in, endOfSequence(job.Codec)...)
				for k := 0; k < n; k++ {
					selected = append(selected, pos+k)
				}
			}
		}
		pos += n
	}
	results := make([][]byte, len(job.Want))
	wantAt := map[int]int{} // process picture index → index in job.Want
	for i, p := range job.Want {
		for k, s := range selected {
			if s == p {
				wantAt[k] = i
				outs = append(outs, k)
			}
		}
	}
	if len(outs) == 0 {
		return results, nil
	}
	imgs, err := f.run(ctx, job, in, outs, len(selected))
	if err != nil {
		return nil, err
	}
	for k, img := range imgs {
		results[wantAt[outs[k]]] = img
	}
	return results, nil
}

// run feeds in to one ffmpeg process, which must give total pictures, and returns those at output
// positions outs (ascending), encoded. Every picture comes out (no select filter): a frame that
// fails to decode would shift the numbering a filter selects by, and the count is what shows it.
// Each wanted picture is encoded as soon as it is read, into one reused buffer: a job holds one
// raw picture at a time (12 MB at 3840x2160), not all of its wanted ones until the process ends.
func (f *FFmpeg) run(ctx context.Context, job *Job, in []byte, outs []int, total int) ([][]byte, error) {
	w, h := job.Width, job.Height
	format := "h264"
	if job.Codec == codec.H265 {
		format = "hevc"
	}
	// Lead frames start at a recovery point: ffmpeg holds back the pictures before the picture is
	// whole unless told to show all, which keeps one picture per frame.
	var showAll []string
	for _, fr := range job.Frames {
		if fr.Lead {
			showAll = []string{"-flags2", "+showall"}
			break
		}
	}
	// Full range: image/jpeg writes JFIF, whose YCbCr is full range.
	args := []string{"-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1"}
	args = append(args, showAll...)
	cmd := exec.CommandContext(ctx, f.path, append(args,
		"-f", format, "-i", "pipe:0", "-an", "-vf", fmt.Sprintf("scale=%d:%d:out_range=full", w, h),
		f.passthroughFlag(ctx), "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1")...)
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = bytes.NewReader(in)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("decode: ffmpeg: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("decode: ffmpeg: %w", err)
	}
	lowerPriority(cmd.Process.Pid)
	cw, ch := (w+1)/2, (h+1)/2
	size := w*h + 2*cw*ch
	imgs := make([][]byte, 0, len(outs))
	rd := bufio.NewReaderSize(stdout, 1<<16)
	buf := make([]byte, size)
	pic := &image.YCbCr{Y: buf[:w*h], Cb: buf[w*h : w*h+cw*ch], Cr: buf[w*h+cw*ch:],
		YStride: w, CStride: cw, SubsampleRatio: image.YCbCrSubsampleRatio420, Rect: image.Rect(0, 0, w, h)}
	n := 0
	var readErr, encodeErr error
	for ; ; n++ {
		if _, err := io.ReadFull(rd, buf); err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
		if encodeErr == nil && len(imgs) < len(outs) && outs[len(imgs)] == n {
			var img []byte
			if img, encodeErr = Encode(pic, w, h, job.Format, job.Quality); encodeErr == nil {
				imgs = append(imgs, img)
			}
		}
	}
	_, _ = io.Copy(io.Discard, rd)
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case n != total || readErr != nil:
		return nil, fmt.Errorf("%w: %d of %d (%v: %s)", errPictureCount, n, total, waitErr, stderr.String())
	case waitErr != nil:
		return nil, fmt.Errorf("decode: ffmpeg: %w: %s", waitErr, stderr.String())
	case encodeErr != nil:
		return nil, encodeErr
	}
	return imgs, nil
}

// tailBuffer keeps the last 2 KiB written to it: the end of ffmpeg's error output.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2048 {
		t.b = append(t.b[:0], t.b[len(t.b)-2048:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }
