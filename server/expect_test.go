package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
)

// rawPut starts a PutMedia request by hand on a new connection, with Expect: 100-continue and a
// chunked body of which nothing is sent yet, and returns the connection and its reader.
func rawPut(t *testing.T, e *mediaEnv, stream string) (net.Conn, *bufio.Reader, *http.Request) {
	t.Helper()
	conn, err := net.Dial("tcp", e.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(time.Minute)) // a hang fails the test instead of stalling it
	head := "POST /putMedia HTTP/1.1\r\nHost: kvs\r\nUser-Agent: producer-test\r\n" +
		hdrStreamName + ": " + stream + "\r\n" + hdrTimecodeType + ": ABSOLUTE\r\n" +
		"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "/putMedia", nil)
	return conn, bufio.NewReader(conn), req
}

// writeChunk sends b as one chunk of a chunked request body.
func writeChunk(t *testing.T, conn net.Conn, b []byte) {
	t.Helper()
	if _, err := fmt.Fprintf(conn, "%x\r\n%s\r\n", len(b), b); err != nil {
		t.Fatal(err)
	}
}

// TestPutMediaExpectContinue: a producer that sends Expect: 100-continue (libcurl, so the C and
// C++ producer SDKs) gets 100 Continue before it has sent a byte of the body, then the 200 and
// its acks; an error decided from the headers goes out instead of the 100, so the body is never
// sent.
func TestPutMediaExpectContinue(t *testing.T) {
	t.Parallel()
	c := loadClip(t, "h264.mkv")
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)

	conn, br, req := rawPut(t, e, "cam")
	// Nothing of the body has been written: the server must answer the expectation first.
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusContinue {
		t.Fatalf("first response %d %v, want 100 Continue before any body byte", resp.StatusCode, resp.Header)
	}
	if resp.Header.Get("Connection") != "" {
		t.Errorf("100 Continue carries Connection: %q", resp.Header.Get("Connection"))
	}
	start := time.Now()
	writeChunk(t, conn, c.header())
	writeChunk(t, conn, c.cluster(t, 0, baseMillis))
	resp, err = http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	acks := bufio.NewScanner(resp.Body)
	var types []string
	for len(types) < 3 && acks.Scan() {
		var ev ackEvent
		if err := json.Unmarshal(acks.Bytes(), &ev); err != nil {
			t.Fatalf("ack %q: %v", acks.Text(), err)
		}
		if ev.EventType == ackIdle {
			continue
		}
		if len(types) == 0 {
			t.Logf("first ack %s %v after the first body byte", ev.EventType, time.Since(start))
		}
		types = append(types, ev.EventType)
	}
	if want := []string{ackBuffering, ackReceived, ackPersisted}; fmt.Sprint(types) != fmt.Sprint(want) {
		t.Fatalf("acks %v, want %v", types, want)
	}
	if _, err := io.WriteString(conn, "0\r\n\r\n"); err != nil { // end of the body
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(resp.Body); bytes.Contains(rest, []byte(ackError)) {
		t.Fatalf("acks after the body ended: %s", rest)
	}

	// An unknown stream is answered at once with 404, no 100: the producer keeps its body.
	_, br, req = rawPut(t, e, "nope")
	resp, err = http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("x-amzn-ErrorType") != "ResourceNotFoundException" ||
		!resp.Close {
		t.Fatalf("unknown stream: %d %v close=%v, want 404 ResourceNotFoundException and Connection: close",
			resp.StatusCode, resp.Header, resp.Close)
	}
}

// TestPutMediaExpectContinueCurl streams a body from a pipe with curl, which waits for 100
// Continue (for at most its expect timeout, 1 s, when none comes) before it sends: in curl's own
// trace the 100 must arrive before the first body byte goes out.
func TestPutMediaExpectContinueCurl(t *testing.T) {
	t.Parallel()
	curl := testutil.NeedTool(t, "curl")
	c := loadClip(t, "h264.mkv")
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	var body []byte
	body = append(body, c.header()...)
	for i := range 3 {
		body = append(body, c.cluster(t, i, baseMillis)...)
	}
	trace := t.TempDir() + "/trace"
	cmd := exec.CommandContext(t.Context(), curl, "-sS", "--no-buffer", "-X", "POST", "-T", "-",
		"--trace-ascii", trace, "-H", "Expect: 100-continue",
		"-H", hdrStreamName+": cam", "-H", hdrTimecodeType+": ABSOLUTE", e.ts.URL+"/putMedia")
	cmd.Stdin = bytes.NewReader(body) // -T - reads a pipe: chunked transfer encoding
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	persisted := strings.Count(string(out), `"EventType":"PERSISTED"`)
	if persisted != 3 || strings.Contains(string(out), ackError) {
		t.Fatalf("curl got %d PERSISTED acks, want 3:\n%s", persisted, out)
	}
	tr, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	cont := bytes.Index(tr, []byte("HTTP/1.1 100 Continue"))
	send := bytes.Index(tr, []byte("=> Send data"))
	if cont < 0 || send < 0 || cont > send {
		t.Fatalf("curl trace: 100 Continue at %d, first body data sent at %d; want the 100 first:\n%s", cont, send, tr)
	}
}
