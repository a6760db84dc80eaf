package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// ListFragments limits (kvs-api.md §7, §13.10).
const (
	defaultListFragments = 100
	maxListFragments     = 1000
	maxNextTokenLen      = 4096
)

type timestampRange struct {
	StartTimestamp *Timestamp `json:"StartTimestamp"`
	EndTimestamp   *Timestamp `json:"EndTimestamp"`
}

type fragmentSelector struct {
	FragmentSelectorType *string         `json:"FragmentSelectorType"`
	TimestampRange       *timestampRange `json:"TimestampRange"`
}

type listFragmentsRequest struct {
	streamRef
	MaxResults       *int64            `json:"MaxResults"`
	NextToken        *string           `json:"NextToken"`
	FragmentSelector *fragmentSelector `json:"FragmentSelector"`
}

// listQuery is a validated ListFragments request: what to list and where the page starts. It is
// also the content of NextToken (listTokenPrefix and JSON, then standard base64, which the model's
// token pattern [a-zA-Z0-9+/]+={0,2} allows), so that a page continues exactly where the previous
// one ended.
type listQuery struct {
	Kind   string `json:"k"`           // "N": all fragments by number; "S"/"P": by server/producer time
	Start  int64  `json:"s,omitempty"` // range, Unix ns, inclusive
	End    int64  `json:"e,omitempty"`
	After  int64  `json:"t,omitempty"` // cursor time (Unix ns) for S/P
	Number uint64 `json:"n,omitempty"` // cursor: the last number returned (0: from the start)
	// Stream is streamTokenID of the stream listed (in NextTokens; 0 in a token of a server that
	// did not write it, which any stream takes).
	Stream uint64 `json:"a,omitempty"`
}

// streamTokenID identifies a stream (by ARN: a stream deleted and created again under its name is
// another one) in the NextTokens of ListFragments, so that one is not taken for another stream.
func streamTokenID(arn string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(arn))
	return max(h.Sum64(), 1)
}

// parseListFragments validates r. With a NextToken the selector is not read (the token carries
// it). Without either, every fragment is listed in number order. MaxResults defaults to 100.
func parseListFragments(r *listFragmentsRequest) (listQuery, int, error) {
	limit := defaultListFragments
	if r.MaxResults != nil {
		if *r.MaxResults < 1 || *r.MaxResults > maxListFragments {
			return listQuery{}, 0, invalidArgf("MaxResults must be between 1 and %d.", maxListFragments)
		}
		limit = int(*r.MaxResults)
	}
	if r.NextToken != nil && *r.NextToken != "" {
		q, err := decodeListToken(*r.NextToken)
		return q, limit, err
	}
	sel := r.FragmentSelector
	if sel == nil {
		return listQuery{Kind: "N"}, limit, nil
	}
	var q listQuery
	switch {
	case sel.FragmentSelectorType == nil:
		return q, 0, invalidArgf("FragmentSelector.FragmentSelectorType is required.")
	case *sel.FragmentSelectorType == "SERVER_TIMESTAMP":
		q.Kind = "S"
	case *sel.FragmentSelectorType == "PRODUCER_TIMESTAMP":
		q.Kind = "P"
	default:
		return q, 0, invalidArgf("FragmentSelector.FragmentSelectorType must be SERVER_TIMESTAMP or PRODUCER_TIMESTAMP.")
	}
	tr := sel.TimestampRange
	if tr == nil || tr.StartTimestamp == nil || tr.EndTimestamp == nil {
		return q, 0, invalidArgf("FragmentSelector.TimestampRange with StartTimestamp and EndTimestamp is required.")
	}
	q.Start, q.End = clampNanos(tr.StartTimestamp.Time), clampNanos(tr.EndTimestamp.Time)
	if q.Start > q.End {
		return q, 0, invalidArgf("TimestampRange.StartTimestamp must not be after EndTimestamp.")
	}
	q.After = q.Start - 1 // strictly after: the first page includes Start
	q.Number = ^uint64(0)
	return q, limit, nil
}

// clampNanos returns t as Unix nanoseconds, clamped to the range the stores keep (1677 to 2262,
// PutMedia refuses producer timestamps beyond) so that JSON timestamps up to year 5138 (which
// Timestamp accepts) cannot overflow. The least value is one above math.MinInt64, so that a
// range's cursor (Start - 1) cannot overflow either.
func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, minRangeNanos)):
		return minRangeNanos
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// minRangeNanos is the least start of a range in Unix nanoseconds (clampNanos).
const minRangeNanos = math.MinInt64 + 1

// farFuture is the end of a range left open: the last time the stores keep.
var farFuture = time.Unix(0, math.MaxInt64)

// listTokenPrefix starts a NextToken's decoded bytes, so that they are not JSON. botocore's
// paginators (the AWS CLI's --starting-token, boto3's PaginationConfig StartingToken) take a
// token that is base64 of a JSON object for one of their own and send its members as request
// parameters ("Unknown parameter in input: k, n, a"); any other token they pass to the service
// as NextToken, as they do the real service's.
const listTokenPrefix = "lf1:"

func encodeListToken(q listQuery) string {
	b, _ := json.Marshal(q) // plain fields: cannot fail
	return base64.StdEncoding.EncodeToString(append([]byte(listTokenPrefix), b...))
}

func decodeListToken(tok string) (listQuery, error) {
	bad := invalidArgf("NextToken is not a token returned by ListFragments.")
	if len(tok) > maxNextTokenLen {
		return listQuery{}, bad
	}
	b, err := base64.StdEncoding.DecodeString(tok)
	if err != nil {
		return listQuery{}, bad
	}
	// Without the prefix: a token of a server before it, taken across an upgrade.
	b = bytes.TrimPrefix(b, []byte(listTokenPrefix))
	var q listQuery
	if err := json.Unmarshal(b, &q); err != nil {
		return listQuery{}, bad
	}
	switch q.Kind {
	case "N":
	case "S", "P":
		if q.Start > q.End || q.Start < minRangeNanos {
			return listQuery{}, bad
		}
	default:
		return listQuery{}, bad
	}
	return q, nil
}

// time returns the timestamp q lists f by.
func (q listQuery) time(f store.FragmentMeta) int64 {
	if q.Kind == "P" {
		return f.ProducerTime.UnixNano()
	}
	return f.ServerTime.UnixNano()
}

// selects reports whether f is in q's range and strictly after its cursor.
func (q listQuery) selects(f store.FragmentMeta) bool {
	if q.Kind == "N" {
		return f.Number > q.Number
	}
	t := q.time(f)
	if t < q.Start || t > q.End {
		return false
	}
	return t > q.After || (t == q.After && f.Number > q.Number)
}

func (q listQuery) less(a, b store.FragmentMeta) bool {
	if q.Kind != "N" {
		if ta, tb := q.time(a), q.time(b); ta != tb {
			return ta < tb
		}
	}
	return a.Number < b.Number
}

// listPage returns up to limit+1 fragments selected by q, in q's order, from the store and the
// live buffer (the only place a retention-0 stream's fragments are).
func (m *media) listPage(ctx context.Context, name string, buf *streamBuffer, q listQuery, limit int) ([]store.FragmentMeta, error) {
	var stored []store.FragmentMeta
	var err error
	switch q.Kind {
	case "N":
		from := q.Number + 1
		if q.Number == ^uint64(0) {
			return nil, nil
		}
		stored, err = m.s.store.Range(ctx, name, from, limit+1)
	default:
		kind := store.ServerTime
		if q.Kind == "P" {
			kind = store.ProducerTime
		}
		cur := store.Cursor{Time: time.Unix(0, q.After), Number: q.Number}
		stored, err = m.s.store.TimeRange(ctx, name, kind, time.Unix(0, q.Start), time.Unix(0, q.End), cur, limit+1)
	}
	if err != nil {
		return nil, err
	}
	stored = buf.addBuffered(stored, q.selects, m.s.firstStored(ctx, name))
	sort.Slice(stored, func(i, j int) bool { return q.less(stored[i], stored[j]) })
	if len(stored) > limit+1 {
		stored = stored[:limit+1]
	}
	return stored, nil
}

// firstStored returns a function that asks the store for the number of the stream's first
// fragment (ok false: it has none), for streamBuffer.addBuffered.
func (s *Server) firstStored(ctx context.Context, name string) func() (uint64, bool) {
	return func() (uint64, bool) {
		f, err := s.store.First(ctx, name)
		return f.Number, err == nil
	}
}

type fragmentJSON struct {
	FragmentNumber               string    `json:"FragmentNumber"`
	FragmentSizeInBytes          int64     `json:"FragmentSizeInBytes"`
	ProducerTimestamp            Timestamp `json:"ProducerTimestamp"`
	ServerTimestamp              Timestamp `json:"ServerTimestamp"`
	FragmentLengthInMilliseconds int64     `json:"FragmentLengthInMilliseconds"`
}

type listFragmentsResponse struct {
	Fragments []fragmentJSON `json:"Fragments"`
	NextToken string         `json:"NextToken,omitempty"`
}

// listFragments implements ListFragments (kvs-api.md §7). Choices (§13.10): MaxResults
// defaults to 100; without a FragmentSelector every fragment is listed, in number order; with one,
// fragments whose start timestamp is in the range (both ends inclusive) are listed in (timestamp,
// number) order. NextToken resumes exactly after the last fragment of the previous page (a
// malformed one, or one another stream returned, is InvalidArgumentException); the last page has
// none. FragmentSizeInBytes is the
// stored chunk's size (fragment plus metadata, §10). Retention-0 streams list their live buffer.
func (m *media) listFragments(ctx context.Context, req *listFragmentsRequest) (listFragmentsResponse, error) {
	q, limit, err := parseListFragments(req)
	if err != nil {
		return listFragmentsResponse{}, err
	}
	st, err := m.s.lookupStream(ctx, req.streamRef, codeInvalidArgument)
	if err != nil {
		return listFragmentsResponse{}, err
	}
	id := streamTokenID(st.ARN)
	if q.Stream != 0 && q.Stream != id {
		return listFragmentsResponse{}, invalidArgf("NextToken was returned for another stream than %s.", st.Name)
	}
	q.Stream = id
	page, err := m.listPage(ctx, st.Name, m.buffer(st), q, limit)
	if err != nil {
		return listFragmentsResponse{}, fmt.Errorf("list fragments %s: %w", st.Name, err)
	}
	resp := listFragmentsResponse{Fragments: make([]fragmentJSON, 0, min(len(page), limit))}
	for i, f := range page {
		if i == limit {
			last := page[limit-1]
			next := q
			next.Number = last.Number
			if q.Kind != "N" {
				next.After = q.time(last)
			}
			resp.NextToken = encodeListToken(next)
			break
		}
		resp.Fragments = append(resp.Fragments, fragmentJSON{
			FragmentNumber:               formatFragmentNumber(f.Number),
			FragmentSizeInBytes:          f.Size,
			ProducerTimestamp:            Timestamp{f.ProducerTime},
			ServerTimestamp:              Timestamp{f.ServerTime},
			FragmentLengthInMilliseconds: f.Duration.Milliseconds(),
		})
	}
	return resp, nil
}

type getMediaForFragmentListRequest struct {
	streamRef
	Fragments []string `json:"Fragments"`
}

// getMediaForFragmentList implements GetMediaForFragmentList (kvs-api.md §8). Choices:
//   - Fragments are sent in the order asked; a number asked twice is sent twice.
//   - Every number is checked before the 200: one that is not 1–128 digits is
//     InvalidArgumentException; one that does not exist is ResourceNotFoundException naming it.
//   - Content-Type is video/webm, as for GetMedia (§13.9).
//   - Tags (§13.2): each chunk carries the stored KVS tags before its cluster (FRAGMENT_NUMBER,
//     SERVER_TIMESTAMP, PRODUCER_TIMESTAMP: the names the KVS parser library reads) and, after it,
//     AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP and AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP (the
//     names the API reference documents), so readers of either spelling find them. No
//     MILLIS_BEHIND_NOW or CONTINUATION_TOKEN.
//   - A fragment that disappears after the check (retention) gets an error chunk instead:
//     FRAGMENT_NUMBER, ERROR_ID 4000 and ERROR_CODE FRAGMENT_NOT_FOUND (parser library), plus
//     EXCEPTION_ERROR_CODE 4000 and EXCEPTION_MESSAGE (API reference); the rest still follow.
//   - The answer has a Content-Length (the model streams it and says nothing of its framing;
//     clients read either): every chunk's size is known from the check, so a download can place
//     each answer in its file before it arrives (kvs get-fragments -o FILE) and net/http writes it
//     without chunk framing. An error chunk is padded to the size of the chunk it stands for with
//     a Void element, which readers skip; should it not fit (a chunk of under about 300 bytes),
//     the connection is cut there instead, which every client reports as a short answer.
func (m *media) getMediaForFragmentList(ctx context.Context, req *getMediaForFragmentListRequest) (responder, error) {
	s := m.s
	if len(req.Fragments) < 1 || len(req.Fragments) > maxListFragments {
		return nil, invalidArgf("Fragments must list 1 to %d fragment numbers.", maxListFragments)
	}
	for _, f := range req.Fragments {
		if len(f) > 128 || !fragmentNumberPattern.MatchString(f) {
			return nil, invalidArgf("Fragment number %q must be 1 to 128 digits.", f)
		}
	}
	st, err := s.lookupStream(ctx, req.streamRef, codeInvalidArgument)
	if err != nil {
		return nil, err
	}
	buf := m.buffer(st)
	numbers := make([]uint64, len(req.Fragments))
	sizes := make([]int64, len(req.Fragments)) // each chunk's size, its trailing tags included
	var tags []byte
	for i, f := range req.Fragments {
		n, err := parseFragmentNumber(f)
		var meta store.FragmentMeta
		if err == nil {
			if live := buf.get(n); live != nil {
				meta = live.Meta
			} else {
				meta, err = s.store.Fragment(ctx, st.Name, n)
			}
		}
		if errors.Is(err, errBadFragmentNumber) || errors.Is(err, store.ErrFragmentNotFound) {
			return nil, fragmentNotFound(f)
		}
		if err != nil {
			return nil, fmt.Errorf("get media for fragment list %s: %w", st.Name, err)
		}
		numbers[i] = n
		tags = appendListTrailingTags(tags[:0], meta)
		sizes[i] = meta.Size + int64(len(tags))
	}
	return func(w http.ResponseWriter, r *http.Request) {
		m.writeFragmentList(w, r, st.Name, buf, numbers, sizes)
	}, nil
}

// appendListTrailingTags appends the Tags that follow a chunk's Cluster in a
// GetMediaForFragmentList answer.
func appendListTrailingTags(b []byte, meta store.FragmentMeta) []byte {
	return mkv.AppendTags(b,
		mkv.SimpleTag{Name: mkv.TagServerSideTimestamp, Value: formatTimestampTag(meta.ServerTime.UnixNano())},
		mkv.SimpleTag{Name: mkv.TagProducerSideTimestamp, Value: formatTimestampTag(meta.ProducerTime.UnixNano())})
}

// headerSendfile is client.HeaderSendfile: the request asks for stored payloads by sendfile(2).
const headerSendfile = "X-Kvs-Sendfile"

// zeros is the data of the Void elements that pad error chunks (writeFragmentList).
var zeros = make([]byte, writePiece)

// writeFragmentList writes the GetMediaForFragmentList answer for the checked numbers, whose
// chunks take sizes bytes each, trailing tags included.
func (m *media) writeFragmentList(w http.ResponseWriter, r *http.Request, name string, buf *streamBuffer, numbers []uint64, sizes []int64) {
	s, ctx := m.s, r.Context()
	pw := newPacedWriter(w, r, http.NewResponseController(w), m.writeTimeout)
	var total int64
	for _, sz := range sizes {
		total += sz
	}
	w.Header().Set("Content-Type", "video/webm")
	w.Header().Set("Content-Length", strconv.FormatInt(total, 10))
	w.WriteHeader(http.StatusOK)
	// The response buffer holds a chunk's trailing tags, or an error chunk. A stored chunk is read
	// from the store as it goes out, a piece at a time (pacedWriter.stream), as GetMedia's: read
	// whole into this buffer first, every reader that took its time held a whole fragment (eight
	// readers of a 16 MiB fragment, 128 MiB: TestSlowListReadersOfStoredFragment).
	out := bufpool.Get(512)
	defer func() { bufpool.Put(out) }()
	// A client that moves the answer into a file unread asks for stored payloads by sendfile(2)
	// (client.HeaderSendfile). Only then: on loopback, a client that reads with copies took longer
	// from sendfile's socket buffers than from written ones (a raw-TCP experiment outside this
	// repository: session 18's note on issue #17).
	sendfile := pw.paced && r.Header.Get(headerSendfile) != ""
	if sendfile {
		// The header out first: else net/http copies the first 512 bytes of the first payload
		// to sniff them before it hands the rest to the connection.
		_ = pw.rc.Flush()
	}
	for i, n := range numbers {
		out = out[:0]
		var meta store.FragmentMeta
		var err error
		// A buffered fragment's chunk is written as it is (shared, not copied), then out holds
		// only its trailing tags; a stored one is opened to be sent.
		var stored io.ReadCloser
		live := buf.acquire(n)
		if live != nil {
			meta = live.Meta
		} else {
			stored, meta, err = s.store.Open(ctx, name, n)
		}
		switch {
		case ctx.Err() != nil:
			live.release()
			if stored != nil {
				stored.Close()
			}
			return
		case err == nil:
			out = appendListTrailingTags(out, meta)
		case errors.Is(err, store.ErrFragmentNotFound), errors.Is(err, store.ErrStreamNotFound):
			out = appendErrorChunk(out[:0], n, 4000, "FRAGMENT_NOT_FOUND",
				mkv.SimpleTag{Name: mkv.TagExceptionErrorCode, Value: "4000"},
				mkv.SimpleTag{Name: mkv.TagExceptionMessage, Value: "The fragment is no longer available."})
		default:
			s.log.Error("get media for fragment list", "stream", name, "fragment", n, "err", err)
			out = appendErrorChunk(out[:0], n, 5000, "INTERNAL_ERROR",
				mkv.SimpleTag{Name: mkv.TagExceptionErrorCode, Value: "5000"},
				mkv.SimpleTag{Name: mkv.TagExceptionMessage, Value: "The fragment could not be read."})
		}
		var sent int64 // of the chunk, before parts
		if stored != nil {
			var rerr error
			if sendfile {
				err = pw.copy(stored)
				sent = meta.Size
			} else {
				sent, err = pw.stream(stored, &rerr)
				if rerr == nil && err == nil && sent != meta.Size {
					rerr = fmt.Errorf("%d of its %d bytes: %w", sent, meta.Size, io.ErrUnexpectedEOF)
				}
			}
			stored.Close()
			if rerr != nil { // the Content-Length cannot be kept: a short answer
				s.log.Error("get media for fragment list: answer cut", "stream", name, "fragment", n, "err", rerr)
			}
			if err != nil || rerr != nil {
				return
			}
		}
		var parts [][]byte
		if live != nil {
			parts = append(parts, live.Chunk)
		}
		parts = append(parts, out)
		pad := sizes[i] - sent
		for _, p := range parts {
			pad -= int64(len(p))
		}
		switch {
		case pad == 0:
		case pad >= mkv.VoidHeaderSize: // an error chunk in place of a stored one
			out = mkv.AppendVoidHeader(out, pad)
			parts[len(parts)-1] = out
			for pad -= mkv.VoidHeaderSize; pad > 0; pad -= int64(len(zeros)) {
				parts = append(parts, zeros[:min(pad, int64(len(zeros)))])
			}
		default: // the Content-Length cannot be kept: a short answer
			live.release()
			s.log.Warn("get media for fragment list: answer cut", "stream", name, "fragment", n, "size", sizes[i], "pad", pad)
			panic(http.ErrAbortHandler)
		}
		err = pw.write(parts...)
		live.release()
		if err != nil {
			return
		}
	}
}
