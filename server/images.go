package server

// GetImages (kvs-api.md §9): the request, its checks, its NextToken and its answer. Which picture
// each sample gets and how it is decoded is in imageplan.go.

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"regexp"
	"strconv"
	"time"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/mkv/codec"
	"github.com/openkvs/kvs/server/store"
)

// GetImages limits and defaults: the model's are listed at getImages; from the API reference, the
// range spans at most 300 s, SamplingInterval is at least 200 ms, JPEGQuality is 1–100 with 80 by
// default, and pages hold 25 images by default.
const (
	imagesMaxRange        = 300 * time.Second
	imagesMinInterval     = 200 // ms
	imagesDefaultInterval = 3000
	imagesDefaultPage     = 25
	imagesMaxPage         = 100
	imagesDefaultQuality  = 80
	// imagesMaxContent is the model's ImageContent maximum (base64 characters): a bigger image
	// (a 4K PNG) is MEDIA_ERROR.
	imagesMaxContent = 6291456
	// imagesMaxResponse caps a page's JSON: a page that would be larger ends early, with a
	// NextToken (100 full-size 1080p PNGs would be 400 MB).
	imagesMaxResponse = 64 << 20
)

// Image errors of an Image's Error member.
const (
	imageNoMedia    = "NO_MEDIA"
	imageMediaError = "MEDIA_ERROR"
)

type getImagesRequest struct {
	streamRef
	ImageSelectorType *string           `json:"ImageSelectorType"`
	StartTimestamp    *Timestamp        `json:"StartTimestamp"`
	EndTimestamp      *Timestamp        `json:"EndTimestamp"`
	SamplingInterval  *int64            `json:"SamplingInterval"`
	Format            *string           `json:"Format"`
	FormatConfig      map[string]string `json:"FormatConfig"`
	WidthPixels       *int64            `json:"WidthPixels"`
	HeightPixels      *int64            `json:"HeightPixels"`
	MaxResults        *int64            `json:"MaxResults"`
	NextToken         *string           `json:"NextToken"`
}

type imageJSON struct {
	TimeStamp    Timestamp `json:"TimeStamp"`
	Error        string    `json:"Error,omitempty"`
	ImageContent string    `json:"ImageContent,omitempty"`
}

type getImagesResponse struct {
	Images    []imageJSON `json:"Images"`
	NextToken string      `json:"NextToken,omitempty"`
}

// imagesQuery is a validated GetImages request: sample k is at start + k·interval, for k below
// count; this page starts at sample next and holds at most page samples.
type imagesQuery struct {
	kind          store.TimeKind
	start, end    time.Time
	interval      time.Duration
	count         int
	next, page    int
	format        decode.Format
	quality       int
	width, height int // 0: the picture's own; only height: width from the aspect ratio
}

// sample returns the time of sample k.
func (q *imagesQuery) sample(k int) time.Time { return q.start.Add(time.Duration(k) * q.interval) }

var formatConfigValue = regexp.MustCompile(`^[a-zA-Z_0-9]+$`)

// parseGetImages checks r against the model and the API reference. Choices where they are silent
// or disagree ([?]):
//   - SamplingInterval: the current model makes it optional with no bounds, the AWS CLI's older
//     model requires 3000–20000; the API reference says at least 200 ms. kvs takes 200 ms up to
//     the int32 maximum and, when it is left out, 3000 ms (the older model's minimum).
//   - WidthPixels without HeightPixels is InvalidArgumentException (the reference's
//     ValidationException); HeightPixels alone keeps the aspect ratio; both stretch.
//   - MaxResults: the reference now says pages hold at most 25 images; kvs defaults to 25 and
//     honours up to 100, the model's bound. A page also ends early when it would decode more
//     than imagesFrameBudget frames or answer more than imagesMaxResponse bytes: a NextToken
//     follows, as after any short page.
//   - JPEGQuality is accepted with PNG and ignored there.
//   - With a NextToken, the other members must be sent again, as the SDK paginators and the AWS
//     CLI do; a token from a request with another selector type, range or interval is
//     InvalidArgumentException. Format, size and quality may change between pages.
func parseGetImages(r *getImagesRequest) (imagesQuery, error) {
	var q imagesQuery
	var err error
	q.kind, err = enumArg("ImageSelectorType", r.ImageSelectorType, "PRODUCER_TIMESTAMP or SERVER_TIMESTAMP", imageSelectorTypes)
	if err != nil {
		return q, err
	}
	if r.StartTimestamp == nil || r.EndTimestamp == nil {
		return q, invalidArgf("StartTimestamp and EndTimestamp are required.")
	}
	q.start, q.end = r.StartTimestamp.Time, r.EndTimestamp.Time
	switch {
	case q.end.Before(q.start):
		return q, invalidArgf("EndTimestamp is before StartTimestamp.")
	case q.end.Sub(q.start) > imagesMaxRange:
		return q, invalidArgf("EndTimestamp is %.3f s after StartTimestamp; GetImages covers at most 300 s per request.", q.end.Sub(q.start).Seconds())
	}
	interval := int64(imagesDefaultInterval)
	if r.SamplingInterval != nil {
		interval = *r.SamplingInterval
		if interval < imagesMinInterval || interval > math.MaxInt32 {
			return q, invalidArgf("SamplingInterval %d: want at least %d (milliseconds).", interval, imagesMinInterval)
		}
	}
	q.interval = time.Duration(interval) * time.Millisecond
	q.count = int(q.end.Sub(q.start)/q.interval) + 1
	q.format, err = enumArg("Format", r.Format, "JPEG or PNG", imageFormats)
	if err != nil {
		return q, err
	}
	q.quality = imagesDefaultQuality
	if r.FormatConfig != nil {
		if err := parseFormatConfig(r.FormatConfig, &q.quality); err != nil {
			return q, err
		}
	}
	if r.WidthPixels != nil {
		if *r.WidthPixels < 1 || *r.WidthPixels > decode.MaxWidth {
			return q, invalidArgf("WidthPixels %d: want 1 to %d.", *r.WidthPixels, decode.MaxWidth)
		}
		if r.HeightPixels == nil {
			return q, invalidArgf("WidthPixels needs HeightPixels too; give HeightPixels alone to keep the aspect ratio.")
		}
		q.width = int(*r.WidthPixels)
	}
	if r.HeightPixels != nil {
		if *r.HeightPixels < 1 || *r.HeightPixels > decode.MaxHeight {
			return q, invalidArgf("HeightPixels %d: want 1 to %d.", *r.HeightPixels, decode.MaxHeight)
		}
		q.height = int(*r.HeightPixels)
	}
	q.page = imagesDefaultPage
	if r.MaxResults != nil {
		if *r.MaxResults < 1 || *r.MaxResults > imagesMaxPage {
			return q, invalidArgf("MaxResults %d: want 1 to %d.", *r.MaxResults, imagesMaxPage)
		}
		q.page = int(*r.MaxResults)
	}
	if r.NextToken != nil {
		next, err := decodeImagesToken(*r.NextToken, q.fingerprint(), q.count)
		if err != nil {
			return q, err
		}
		q.next = next
	}
	return q, nil
}

// parseFormatConfig reads the FormatConfig map: exactly one entry, JPEGQuality, "1" to "100".
func parseFormatConfig(m map[string]string, quality *int) error {
	if len(m) != 1 {
		return invalidArgf("FormatConfig must hold exactly one entry, JPEGQuality (it has %d).", len(m))
	}
	v, ok := m["JPEGQuality"]
	if !ok {
		for k := range m {
			return invalidArgf("FormatConfig key %q: the only key is JPEGQuality.", k)
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil || !formatConfigValue.MatchString(v) || len(v) > 256 || n < 1 || n > 100 {
		return invalidArgf("FormatConfig JPEGQuality %q: want a whole number from 1 to 100.", v)
	}
	*quality = n
	return nil
}

// fingerprint identifies the samples of q (selector, range, interval) in its NextTokens.
func (q *imagesQuery) fingerprint() uint64 {
	h := fnv.New64a()
	var b [25]byte
	b[0] = byte(q.kind)
	binary.BigEndian.PutUint64(b[1:], uint64(q.start.UnixNano()))
	binary.BigEndian.PutUint64(b[9:], uint64(q.end.UnixNano()))
	binary.BigEndian.PutUint64(b[17:], uint64(q.interval))
	_, _ = h.Write(b[:])
	return h.Sum64()
}

// A GetImages NextToken is standard base64 (the model's pattern) of 13 bytes: the version (1),
// the index of the next sample (uint32, big-endian) and the request's fingerprint (uint64), so
// that a page continues exactly where the previous one ended, whatever its length.
const imagesTokenVersion = 1

var errImagesToken = errors.New("not a GetImages NextToken")

func encodeImagesToken(next int, fingerprint uint64) string {
	var b [13]byte
	b[0] = imagesTokenVersion
	binary.BigEndian.PutUint32(b[1:], uint32(next))
	binary.BigEndian.PutUint64(b[5:], fingerprint)
	return base64.StdEncoding.EncodeToString(b[:])
}

// parseImagesToken returns the sample index and fingerprint of tok, or errImagesToken.
func parseImagesToken(tok string) (next int, fingerprint uint64, err error) {
	if len(tok) != base64.StdEncoding.EncodedLen(13) {
		return 0, 0, errImagesToken
	}
	b, err := base64.StdEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) != 13 || b[0] != imagesTokenVersion {
		return 0, 0, errImagesToken
	}
	n := binary.BigEndian.Uint32(b[1:])
	if n > math.MaxInt32 {
		return 0, 0, errImagesToken
	}
	return int(n), binary.BigEndian.Uint64(b[5:]), nil
}

// decodeImagesToken checks a request's NextToken against the request it comes with.
func decodeImagesToken(tok string, fingerprint uint64, count int) (int, error) {
	next, fp, err := parseImagesToken(tok)
	switch {
	case err != nil:
		return 0, invalidArgf("NextToken is not a token GetImages returned.")
	case fp != fingerprint || next < 1 || next >= count:
		return 0, invalidArgf("NextToken belongs to another request: send the ImageSelectorType, StartTimestamp, EndTimestamp and SamplingInterval of the request that returned it.")
	}
	return next, nil
}

// getImages implements GetImages (kvs-api.md §9): one Image per sample of the page, at
// StartTimestamp + k·SamplingInterval up to EndTimestamp (inclusive), on the producer's or the
// server's clock. TimeStamp is the sample time. A sample that no fragment covers (a gap, before
// the first, after the last) is NO_MEDIA; one whose fragment has no H.264/H.265 video, or whose
// picture does not decode, is MEDIA_ERROR. How pictures are chosen and decoded: imageplan.go.
//
// The wire, as confirmed in botocore's kinesis-video-archived-media 2017-09-30 service-2.json
// (the AWS CLI 2.9.19 copy and a newer one) and aws-sdk-go-v2 kinesisvideoarchivedmedia v1.32.2:
//   - POST /getImages, all members in the JSON body. Required: ImageSelectorType
//     (PRODUCER_TIMESTAMP | SERVER_TIMESTAMP), StartTimestamp, EndTimestamp (epoch-second
//     numbers; the Go SDK sends milliseconds as a double, botocore whole seconds), Format
//     (JPEG | PNG). SamplingInterval (int32, ms) is required with 3000–20000 only in the older
//     model: botocore checks that minimum before sending, so that CLI cannot ask below 3000 ms.
//   - FormatConfig: a map of exactly one entry, key JPEGQuality (the only enum value), value a
//     string of 0–256 [a-zA-Z_0-9]. WidthPixels 1–3840, HeightPixels 1–2160, MaxResults (long)
//     1–100, NextToken 1–4096 of [a-zA-Z0-9+/]+={0,2}.
//   - Output: {"Images":[{"TimeStamp":n,"Error":"NO_MEDIA"|"MEDIA_ERROR","ImageContent":"<base64,
//     1–6291456 chars>"}],"NextToken":"…"}; the Go SDK requires TimeStamp to be a JSON number.
//     Both paginators (the SDK's NewGetImagesPaginator, the CLI's paginators-1.json with
//     --page-size as MaxResults) send every member again with the NextToken and stop at a page
//     without one.
//   - Errors: ResourceNotFoundException 404, InvalidArgumentException 400,
//     ClientLimitExceededException 400, NotAuthorizedException 401, and in the newer model (and
//     the Go SDK's deserializer) NoDataRetentionException 400.
//
// kvs raises InvalidArgumentException for the checks of parseGetImages, ResourceNotFoundException
// for an unknown stream, NoDataRetentionException for a stream that keeps no data, and
// ClientLimitExceededException when more GetImages requests are being served than
// Config.MaxImageRequests. Beyond the model: UnsupportedStreamMediaTypeException (400) when the
// page needs a codec this server cannot decode (no ffmpeg on PATH for H.265, say), naming the
// fix; the SDKs surface it as a generic API error with that code and message.
func (im *imageService) getImages(ctx context.Context, req *getImagesRequest) (getImagesResponse, error) {
	q, err := parseGetImages(req)
	if err != nil {
		return getImagesResponse{}, err
	}
	s := im.s
	st, err := s.lookupStream(ctx, req.streamRef, codeInvalidArgument)
	if err != nil {
		return getImagesResponse{}, err
	}
	if st.RetentionHours <= 0 {
		return getImagesResponse{}, apiErrorf(codeNoDataRetention,
			"The stream %s does not retain data (DataRetentionInHours is 0): GetImages serves stored media only.", st.Name)
	}
	select {
	case im.admitted <- struct{}{}:
		defer func() { <-im.admitted }()
	default:
		return getImagesResponse{}, apiErrorf(codeClientLimitExceeded,
			"This server is already serving %d GetImages requests; retry in a moment.", cap(im.admitted))
	}
	p, err := im.plan(ctx, st, &q)
	if err != nil {
		return getImagesResponse{}, err
	}
	if err := im.decodeSlots(ctx, st, p); err != nil {
		return getImagesResponse{}, err
	}
	resp := getImagesResponse{Images: make([]imageJSON, 0, len(p.slots))}
	size := 0
	for _, sl := range p.slots {
		img := imageJSON{TimeStamp: Timestamp{sl.t}, Error: sl.err}
		n := base64.StdEncoding.EncodedLen(len(sl.img))
		switch {
		case sl.err != "":
		case n > imagesMaxContent:
			s.log.Warn("get images: an image is over the model's ImageContent limit", "stream", st.Name, "base64_bytes", n)
			img.Error = imageMediaError
		case size+n > imagesMaxResponse && len(resp.Images) > 0:
			n = -1 // the page ends before this image
		default:
			img.ImageContent = base64.StdEncoding.EncodeToString(sl.img)
			size += n
		}
		if n < 0 {
			break
		}
		resp.Images = append(resp.Images, img)
	}
	if end := q.next + len(resp.Images); end < q.count {
		resp.NextToken = encodeImagesToken(end, q.fingerprint())
	}
	return resp, nil
}

// unsupportedCodec is the error for a page that needs a codec no decoder of this server decodes.
func (im *imageService) unsupportedCodec(c codec.Codec) error {
	if im.dec == nil || (!im.dec.Decodes(codec.H264) && !im.dec.Decodes(codec.H265)) {
		return apiErrorf(codeUnsupportedMedia, "This kvs server has no video decoder for GetImages: install ffmpeg on its PATH "+
			"(apt-get install ffmpeg, brew install ffmpeg) and restart it; cgo builds of kvs also decode H.264 without ffmpeg.")
	}
	return apiErrorf(codeUnsupportedMedia, "This kvs server cannot decode %v for GetImages (its decoders: %s): install ffmpeg on its PATH and restart it.", c, im.dec)
}

// The values of GetImages' ImageSelectorType and Format.
var (
	imageSelectorTypes = map[string]store.TimeKind{"PRODUCER_TIMESTAMP": store.ProducerTime, "SERVER_TIMESTAMP": store.ServerTime}
	imageFormats       = map[string]decode.Format{"JPEG": decode.JPEG, "PNG": decode.PNG}
)

// enumArg maps the value of the request field name through values: a missing field, or a value
// not among them, is InvalidArgumentException naming the accepted ones (want).
func enumArg[T any](name string, v *string, want string, values map[string]T) (T, error) {
	var zero T
	if v == nil {
		return zero, invalidArgf("%s is required: %s.", name, want)
	}
	t, ok := values[*v]
	if !ok {
		return zero, invalidArgf("%s %q: want %s.", name, *v, want)
	}
	return t, nil
}
