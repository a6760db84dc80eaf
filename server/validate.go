package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/openkvs/kvs/server/store"
)

// Limits and patterns from the kinesisvideo service model (kvs-api.md §2). Go's \w is ASCII-only,
// like Java's default, which is what the service's patterns are written for.
const (
	maxStreamNameLen = 256
	maxDeviceNameLen = 128
	maxMediaTypeLen  = 128
	maxKmsKeyIDLen   = 2048
	maxVersionLen    = 64
	maxARNLen        = 1024
	maxTagKeyLen     = 128
	maxTagValueLen   = 256
	maxTagsPerStream = 50
	maxRetentionHrs  = 87600
	versionLen       = 20
)

var (
	namePattern      = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)
	mediaTypePattern = regexp.MustCompile(`^[\w\-\.\+]+/[\w\-\.\+]+(,[\w\-\.\+]+/[\w\-\.\+]+)*$`)
	versionPattern   = regexp.MustCompile(`^[a-zA-Z0-9]+$`)
	tagPattern       = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	// arnPattern is the model's ResourceARN pattern with groups for resource type, name and
	// creation time. The model allows any partition; so do we (ARNs we issue always use "aws").
	arnPattern = regexp.MustCompile(`^arn:[a-z\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:([a-z]+)/([a-zA-Z0-9_.-]+)/([0-9]+)$`)
)

// enumMember returns the value of the member called name, v, which must be one of allowed (else
// InvalidArgumentException "name must be A, B or C."), or def when v is nil.
func enumMember(name string, v *string, def string, allowed ...string) (string, error) {
	if v == nil {
		return def, nil
	}
	if !slices.Contains(allowed, *v) {
		last := len(allowed) - 1
		return "", invalidArgf("%s must be %s or %s.", name, strings.Join(allowed[:last], ", "), allowed[last])
	}
	return *v, nil
}

// alwaysMember reads a Display* member of the streaming session requests: ALWAYS is true, NEVER
// (the default) false.
func alwaysMember(name string, v *string) (bool, error) {
	s, err := enumMember(name, v, "NEVER", "ALWAYS", "NEVER")
	return s == "ALWAYS", err
}

// validateStreamName checks a StreamName member (1–256 of [a-zA-Z0-9_.-]).
//
// Choice: "." and ".." match the model's pattern but are rejected here too, so that no stream name
// can ever be a path element with a meaning of its own, whatever the store does with names.
func validateStreamName(member, name string) error {
	if name == "" || len(name) > maxStreamNameLen || !namePattern.MatchString(name) {
		return invalidArgf("%s must be 1 to %d characters of a-z, A-Z, 0-9, '_', '.' and '-'.", member, maxStreamNameLen)
	}
	if name == "." || name == ".." {
		return invalidArgf("%s must not be %q.", member, name)
	}
	return nil
}

func validateDeviceName(name string) error {
	if name == "" || len(name) > maxDeviceNameLen || !namePattern.MatchString(name) {
		return invalidArgf("DeviceName must be 1 to %d characters of a-z, A-Z, 0-9, '_', '.' and '-'.", maxDeviceNameLen)
	}
	return nil
}

func validateMediaType(mt string) error {
	if mt == "" || len(mt) > maxMediaTypeLen || !mediaTypePattern.MatchString(mt) {
		return invalidArgf("MediaType must be up to %d characters of type/subtype pairs separated by commas, e.g. video/h264,audio/aac.", maxMediaTypeLen)
	}
	return nil
}

func validateKmsKeyID(id string) error {
	if id == "" || utf8.RuneCountInString(id) > maxKmsKeyIDLen {
		return invalidArgf("KmsKeyId must be 1 to %d characters.", maxKmsKeyIDLen)
	}
	return nil
}

func validateVersion(member, v string) error {
	if v == "" || len(v) > maxVersionLen || !versionPattern.MatchString(v) {
		return invalidArgf("%s must be 1 to %d letters and digits.", member, maxVersionLen)
	}
	return nil
}

func validateRetention(member string, hours int) error {
	if hours < 0 || hours > maxRetentionHrs {
		return invalidArgf("%s must be between 0 and %d.", member, maxRetentionHrs)
	}
	return nil
}

func validateTagKey(k string) error {
	if n := utf8.RuneCountInString(k); n == 0 || n > maxTagKeyLen || !tagPattern.MatchString(k) {
		return invalidArgf("Tag key %q must be 1 to %d letters, digits, spaces and _.:/=+-@.", k, maxTagKeyLen)
	}
	return nil
}

func validateTagValue(k, v string) error {
	if utf8.RuneCountInString(v) > maxTagValueLen || !tagPattern.MatchString(v) {
		return invalidArgf("The value of tag %q must be up to %d letters, digits, spaces and _.:/=+-@.", k, maxTagValueLen)
	}
	if k == store.MaxBytesTag { // a kvs extension: the stream's byte cap
		if _, err := store.ParseSize(v); err != nil {
			return invalidArgf("Tag %s caps the bytes the stream keeps: its value must be a size such as 500MB, 2GiB or 1048576 (got %q).", k, v)
		}
	}
	return nil
}

// validateTags checks a Tags map of a request: 1–50 entries (more is
// TagsPerResourceExceededLimitException, as the brief and the real service do), valid keys and values.
func validateTags(tags map[string]string) error {
	if len(tags) == 0 {
		return invalidArgf("Tags must have at least 1 entry.")
	}
	if len(tags) > maxTagsPerStream {
		return apiErrorf(codeTagsPerResourceLimit, "A resource can have at most %d tags.", maxTagsPerStream)
	}
	for k, v := range tags {
		if err := validateTagKey(k); err != nil {
			return err
		}
		if err := validateTagValue(k, v); err != nil {
			return err
		}
	}
	return nil
}

// validateTagKeyList checks the TagKeyList of UntagStream / UntagResource: 1–50 valid keys.
func validateTagKeyList(keys []string) error {
	if len(keys) == 0 || len(keys) > maxTagsPerStream {
		return invalidArgf("TagKeyList must have 1 to %d keys.", maxTagsPerStream)
	}
	for _, k := range keys {
		if err := validateTagKey(k); err != nil {
			return err
		}
	}
	return nil
}

// parsedARN is a syntactically valid kinesisvideo ARN.
type parsedARN struct {
	ResourceType string // "stream", "channel", ...
	Name         string
	CreationMs   int64
}

// parseARN checks arn against the model's pattern. The error is an APIError of type code
// (InvalidArgumentException, or InvalidResourceFormatException for the *Stream tag operations).
func parseARN(member, arn, code string) (parsedARN, error) {
	m := arnPattern.FindStringSubmatch(arn)
	if len(arn) > maxARNLen || m == nil {
		return parsedARN{}, apiErrorf(code, "%s %q is not a valid Kinesis Video ARN.", member, arn)
	}
	ms, err := strconv.ParseInt(m[3], 10, 64)
	if err != nil {
		return parsedARN{}, apiErrorf(code, "%s %q is not a valid Kinesis Video ARN.", member, arn)
	}
	if err := validateStreamName(member, m[2]); err != nil {
		return parsedARN{}, apiErrorf(code, "%s %q is not a valid Kinesis Video ARN.", member, arn)
	}
	return parsedARN{ResourceType: m[1], Name: m[2], CreationMs: ms}, nil
}

// streamRef is the "StreamName and/or StreamARN" pair that most stream operations accept.
type streamRef struct {
	StreamName *string `json:"StreamName"`
	StreamARN  *string `json:"StreamARN"`
}

// lookupStream resolves a StreamName|StreamARN pair to the stored stream.
//
//   - Neither given: InvalidArgumentException.
//   - A malformed name or ARN: InvalidArgumentException, or badARNCode for a malformed ARN.
//   - An ARN names a stream by name and creation time: a stream that was deleted and re-created
//     under the same name has a new ARN, and the old ARN is not found.
//   - Choice for kvs-api.md [?] "both given": accepted when they name the same stream, else
//     InvalidArgumentException (checked before existence, so the error does not depend on state).
//   - Unknown: ResourceNotFoundException, "The requested stream is not found or not active.".
func (s *Server) lookupStream(ctx context.Context, ref streamRef, badARNCode string) (store.Stream, error) {
	var name string
	var arn *parsedARN
	if ref.StreamARN != nil {
		a, err := parseARN("StreamARN", *ref.StreamARN, badARNCode)
		if err != nil {
			return store.Stream{}, err
		}
		if a.ResourceType != "stream" {
			return store.Stream{}, apiErrorf(badARNCode, "StreamARN %q is not a stream ARN.", *ref.StreamARN)
		}
		arn, name = &a, a.Name
	}
	if ref.StreamName != nil {
		if err := validateStreamName("StreamName", *ref.StreamName); err != nil {
			return store.Stream{}, err
		}
		if arn != nil && arn.Name != *ref.StreamName {
			return store.Stream{}, invalidArgf("StreamName %q and StreamARN %q name different streams.", *ref.StreamName, *ref.StreamARN)
		}
		name = *ref.StreamName
	}
	if name == "" {
		return store.Stream{}, invalidArgf("StreamName or StreamARN must be specified.")
	}
	st, err := s.store.GetStream(ctx, name)
	if err != nil {
		return store.Stream{}, fmt.Errorf("stream %s: %w", name, err)
	}
	if arn != nil && st.ARN != *ref.StreamARN {
		return store.Stream{}, fmt.Errorf("stream %s: ARN %s: %w", name, *ref.StreamARN, store.ErrStreamNotFound)
	}
	return st, nil
}

// streamARN returns the ARN of a stream created at creation (which has millisecond precision).
func (s *Server) streamARN(name string, creationMs int64) string {
	return "arn:aws:kinesisvideo:" + s.cfg.Region + ":" + s.cfg.AccountID + ":stream/" + name + "/" +
		strconv.FormatInt(creationMs, 10)
}

// defaultKmsKeyID is reported for streams created without KmsKeyId: the AWS-managed key alias, as
// the real service reports it.
func (s *Server) defaultKmsKeyID() string {
	return "arn:aws:kms:" + s.cfg.Region + ":" + s.cfg.AccountID + ":alias/aws/kinesisvideo"
}

const alphanumerics = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newVersion returns a fresh stream Version: 20 random alphanumerics, like the real service's
// "h64abdzI2OG5fNfd68y7".
func newVersion() string {
	b := make([]byte, 0, versionLen)
	var buf [32]byte
	for len(b) < versionLen {
		_, _ = rand.Read(buf[:]) // never fails (Go 1.24+)
		for _, c := range buf {
			// 248 = 4*62: rejecting larger bytes keeps the choice uniform.
			if c < 248 && len(b) < versionLen {
				b = append(b, alphanumerics[c%62])
			}
		}
	}
	return string(b)
}
