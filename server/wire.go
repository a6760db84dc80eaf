package server

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Fragment numbers. KVS fragment numbers are decimal strings (47 digits in every real sample, starting
// with 91343852333). kvs formats a stream's store sequence number n as the fixed prefix followed by n
// zero-padded to 36 digits: 47 digits in all, so string order equals numeric order, numbers are
// unique per stream name across restarts and deletes (the store never reuses n under a name, see
// store.Store.NextNumber) and clients that keep them as text
// (PIC: up to 128 chars), as BigInteger (Java parser) or as strings (Go, botocore) all work.
const (
	fragmentNumberPrefix = "91343852333"
	fragmentNumberDigits = 36
	fragmentNumberLen    = len(fragmentNumberPrefix) + fragmentNumberDigits
)

var errBadFragmentNumber = errors.New("not a fragment number of this server")

// formatFragmentNumber turns a store sequence number into the KVS fragment-number string.
func formatFragmentNumber(n uint64) string {
	return fmt.Sprintf("%s%0*d", fragmentNumberPrefix, fragmentNumberDigits, n)
}

// parseFragmentNumber is the inverse of formatFragmentNumber.
func parseFragmentNumber(s string) (uint64, error) {
	if len(s) != fragmentNumberLen || !strings.HasPrefix(s, fragmentNumberPrefix) {
		return 0, errBadFragmentNumber
	}
	n, err := strconv.ParseUint(s[len(fragmentNumberPrefix):], 10, 64)
	if err != nil || n == 0 {
		return 0, errBadFragmentNumber
	}
	return n, nil
}

// ACK event types of the PutMedia response stream (kvs-api.md §5.3).
const (
	ackBuffering = "BUFFERING"
	ackReceived  = "RECEIVED"
	ackPersisted = "PERSISTED"
	ackError     = "ERROR"
	ackIdle      = "IDLE"
)

// ackEvent is one line of the PutMedia ACK stream. FragmentNumber is a JSON string and ErrorId a JSON
// number, as the real service sends them (the API docs' example disagrees; producers follow the wire).
type ackEvent struct {
	EventType        string
	FragmentTimecode *int64 `json:",omitempty"`
	FragmentNumber   string `json:",omitempty"`
	ErrorCode        string `json:",omitempty"`
	ErrorId          int    `json:",omitempty"` //nolint:revive // wire name
}

// appendAck appends ev as one JSON line (with the trailing newline) in the key order of the real
// service's acks (EventType, FragmentTimecode, FragmentNumber, ErrorCode, ErrorId), without
// allocating when b has room. Its output equals json.Marshal(ev) plus "\n" (wire_test.go).
func appendAck(b []byte, ev *ackEvent) []byte {
	b = append(b, `{"EventType":"`...)
	b = append(b, ev.EventType...)
	b = append(b, '"')
	if ev.FragmentTimecode != nil {
		b = append(b, `,"FragmentTimecode":`...)
		b = strconv.AppendInt(b, *ev.FragmentTimecode, 10)
	}
	if ev.FragmentNumber != "" {
		b = append(b, `,"FragmentNumber":"`...)
		b = append(b, ev.FragmentNumber...)
		b = append(b, '"')
	}
	if ev.ErrorCode != "" {
		b = append(b, `,"ErrorCode":"`...)
		b = append(b, ev.ErrorCode...)
		b = append(b, '"')
	}
	if ev.ErrorId != 0 {
		b = append(b, `,"ErrorId":`...)
		b = strconv.AppendInt(b, int64(ev.ErrorId), 10)
	}
	return append(b, "}\n"...)
}

// ackErr is a PutMedia failure that ends the connection with an ERROR ack. Besides the error it
// records what the ack points at, decided where the error is raised (putParser.at, fragAt):
// the fragment it belongs to, when it has a number yet, and the cluster timecode of what was
// being parsed, when known. An error between fragments (producer tags over the limit, a stalled
// or malformed body after a cluster ended) names neither, and the producer SDK (PIC's
// streamFragmentAckEvent) then applies it to its oldest fragment not yet PERSISTED; an ERROR
// with the timecode of a fragment it no longer holds is refused (ACK_TIMESTAMP_NOT_IN_VIEW_WINDOW).
type ackErr struct {
	ID      int    // ErrorId, 4000-5001
	Code    string // ErrorCode
	Message string // for logs only; the ACK carries just the id and code

	Number      uint64 // fragment the error belongs to; 0: none has a number yet
	Timecode    int64  // raw cluster timecode of what was being parsed, when HasTimecode
	HasTimecode bool
	Offset      int64 // byte offset in the body of the element at fault; -1 when not known
}

func (e *ackErr) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, e.ID, e.Message) }

// PutMedia ACK error ids and codes (kvs-api.md §5.4). The ids are documented; the code strings come
// from the Java SDK's AckErrorCode enum. 4010-4012 and 4507 have no documented string: the names
// here are ours, chosen to read like the documented ones.
var ackErrors = map[int]string{
	4000: "STREAM_READ_ERROR",
	4001: "MAX_FRAGMENT_SIZE_REACHED",
	4002: "MAX_FRAGMENT_DURATION_REACHED",
	4003: "MAX_CONNECTION_DURATION_REACHED",
	4004: "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS",
	4005: "MORE_THAN_ONE_TRACK_FOUND",
	4006: "INVALID_MKV_DATA",
	4007: "INVALID_PRODUCER_TIMESTAMP",
	4008: "STREAM_NOT_ACTIVE",
	4009: "FRAGMENT_METADATA_LIMIT_REACHED",
	4010: "TRACK_NUMBER_MISMATCH",
	4011: "FRAMES_MISSING_FOR_TRACK",
	4012: "MORE_THAN_ALLOWED_TRACKS_FOUND",
	4500: "KMS_KEY_ACCESS_DENIED",
	4501: "KMS_KEY_DISABLED",
	4502: "KMS_KEY_VALIDATION_ERROR",
	4503: "KMS_KEY_UNAVAILABLE",
	4504: "KMS_KEY_INVALID_USAGE",
	4505: "KMS_KEY_INVALID_STATE",
	4506: "KMS_KEY_NOT_FOUND",
	4507: "STREAM_DELETED",
	5000: "INTERNAL_ERROR",
	5001: "ARCHIVAL_ERROR",
}

// newAckErr builds the ERROR ack for id with a log message.
func newAckErr(id int, format string, a ...any) *ackErr {
	return &ackErr{ID: id, Code: ackErrors[id], Message: fmt.Sprintf(format, a...), Offset: -1}
}

// fragment makes e point at fragment number (0: none) with cluster timecode tc, and returns e.
func (e *ackErr) fragment(number uint64, tc int64) *ackErr {
	e.Number, e.Timecode, e.HasTimecode = number, tc, true
	return e
}

// formatTimestampTag formats t (Unix nanoseconds) as KVS timestamp tags do: epoch seconds with
// exactly three decimals.
func formatTimestampTag(unixNano int64) string {
	ms := unixNano / 1e6
	if unixNano < 0 && unixNano%1e6 != 0 {
		ms--
	}
	sec, frac := ms/1000, ms%1000
	if frac < 0 {
		sec, frac = sec-1, frac+1000
	}
	return fmt.Sprintf("%d.%03d", sec, frac)
}
