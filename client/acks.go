package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ACK event types of the PutMedia response stream.
const (
	AckBuffering = "BUFFERING"
	AckReceived  = "RECEIVED"
	AckPersisted = "PERSISTED"
	AckError     = "ERROR"
	AckIdle      = "IDLE"
)

// Ack is one PutMedia acknowledgement event. FragmentTimecode is the fragment's cluster timecode as
// the producer sent it (ticks, normally ms).
type Ack struct {
	EventType        string `json:"EventType"`
	FragmentTimecode int64  `json:"FragmentTimecode,omitempty"`
	FragmentNumber   string `json:"FragmentNumber,omitempty"`
	ErrorID          int    `json:"ErrorId,omitempty"`
	ErrorCode        string `json:"ErrorCode,omitempty"`
}

// maxAckLine caps one ACK line. Real ACKs are about 150 bytes; PIC rejects anything over 1024.
const maxAckLine = 4096

// ErrAckTooLong is returned by ReadAcks for a line longer than maxAckLine.
var ErrAckTooLong = errors.New("putmedia: ACK line too long")

// ReadAcks parses the newline-delimited JSON ACK stream from r and calls fn for every event, in
// order, until r ends (nil), fn returns an error, or the stream is malformed. It tolerates blank lines
// and events spread over or packed into HTTP chunks in any way.
func ReadAcks(r io.Reader, fn func(Ack) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxAckLine)
	// Split on newlines, and also between back-to-back objects ("}{") that some proxies produce.
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		nl := bytes.IndexByte(data, '\n')
		if i := bytes.Index(data, []byte("}{")); i >= 0 && (nl < 0 || i < nl) {
			return i + 1, data[:i+1], nil
		}
		if nl >= 0 {
			return nl + 1, data[:nl], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var a Ack
		if err := json.Unmarshal(line, &a); err != nil {
			return fmt.Errorf("putmedia: malformed ACK %q: %w", truncate(line, 80), err)
		}
		if a.EventType == "" {
			return fmt.Errorf("putmedia: ACK without EventType: %q", truncate(line, 80))
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return ErrAckTooLong
	}
	return sc.Err()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// AckErrorMeanings explains the PutMedia ERROR ack ids in words a user can act on.
var AckErrorMeanings = map[int]string{
	4000: "the server could not read the request body (connection problem)",
	4001: "a fragment is larger than the 50 MB limit: cut fragments more often (shorter --fragment-duration or more keyframes)",
	4002: "a fragment is longer than the maximum fragment duration: the source needs keyframes at least that often",
	4003: "the connection stayed open longer than allowed; reconnect",
	4004: "a fragment's timecode is lower than the previous one's: timestamps must increase",
	4005: "more than one track found (deprecated rule)",
	4006: "the MKV data is invalid (no EBML header or Tracks, unparsable element, or a fragment that does not start with a keyframe)",
	4007: "the producer timestamp is invalid",
	4008: "the stream is not active (deleted?)",
	4009: "too many fragment metadata tags",
	4010: "a frame belongs to a track that the Tracks element does not declare",
	4011: "a declared track has no frame in the fragment",
	4012: "more than the allowed number of tracks (3)",
	4500: "KMS key access denied", 4501: "KMS key disabled", 4502: "KMS key validation error",
	4503: "KMS key unavailable", 4504: "KMS key invalid usage", 4505: "KMS key invalid state",
	4506: "KMS key not found",
	4507: "the stream was deleted",
	5000: "internal server error; retry",
	5001: "the server failed to persist the fragment (disk full or I/O error); retry",
}

// AckErr is an ERROR acknowledgement turned into a Go error.
type AckErr struct {
	Ack Ack
}

func (e *AckErr) Error() string {
	s := fmt.Sprintf("putmedia: %s (%d)", e.Ack.ErrorCode, e.Ack.ErrorID)
	if e.Ack.FragmentNumber != "" { // an ERROR about the upload (4008: stream deleted) names none
		s = fmt.Sprintf("putmedia: fragment %s: %s (%d)", e.Ack.FragmentNumber, e.Ack.ErrorCode, e.Ack.ErrorID)
	}
	if m := AckErrorMeanings[e.Ack.ErrorID]; m != "" {
		s += ": " + m
	}
	return s
}

// Retryable reports whether sending the same fragment again may succeed (server-side and connection
// problems), as opposed to errors in the media itself.
func (e *AckErr) Retryable() bool {
	switch e.Ack.ErrorID {
	case 4000, 4003, 4503, 5000, 5001:
		return true
	}
	return false
}

// Fatal reports whether the error ends the upload (the stream deleted, its KMS key unusable): no
// fragment can succeed on the stream after it, so the Producer stops and Close returns it.
func (e *AckErr) Fatal() bool { return fatalAck(e.Ack.ErrorID) }
