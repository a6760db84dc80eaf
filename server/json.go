package server

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// decodeJSON reads r's body (at most MaxRequestBody bytes) into v, a pointer to a request struct.
//
//   - An empty body (or only whitespace, or the literal null) is treated as {}: botocore sends {}
//     and the Go SDK always sends an object, but curl users often send nothing.
//   - Unknown members are ignored (forward compatibility, kvs-api.md §1.2). Names are
//     case-sensitive, as on the service: "streamName" is an unknown member, not StreamName.
//   - Malformed JSON, a non-object, a member of the wrong type, a number out of range, or a body
//     over the cap is an InvalidArgumentException (400), never a 500.
//
// The Content-Type header is not checked: real clients send application/json,
// application/x-amz-json-1.1 or nothing.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return invalidArgf("The request body exceeds %d bytes.", mbe.Limit)
		}
		return invalidArgf("Could not read the request body: %v.", err)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil
	}
	if body[0] != '{' && !bytes.Equal(body, []byte("null")) {
		return invalidArgf("The request body must be a JSON object.")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return invalidArgf("Member %s has the wrong type (got JSON %s).", memberPath(reflect.TypeOf(v), te.Field), te.Value)
		case errors.As(err, &te):
			return invalidArgf("A member has the wrong type (got JSON %s).", te.Value)
		case errors.As(err, &se):
			return invalidArgf("The request body is not valid JSON (offset %d).", se.Offset)
		default:
			return invalidArgf("The request body is not valid JSON: %v.", err)
		}
	}
	// encoding/json matches member names case-insensitively; the service does not. A member
	// named like one of the request's but for case is unknown, so ignored: renamed where it
	// stands so that it matches nothing, and the body decoded again.
	if !mayHaveFoldedMembers(body, reflect.TypeOf(v)) {
		return nil
	}
	folded, err := foldedMembers(body, reflect.TypeOf(v))
	if err != nil || len(folded) == 0 {
		return err
	}
	body = bytes.Clone(body)
	for _, at := range folded {
		body[at] = '#'
	}
	reflect.ValueOf(v).Elem().SetZero()
	if err := json.Unmarshal(body, v); err != nil {
		return invalidArgf("The request body is not valid JSON: %v.", err)
	}
	return nil
}

// mayHaveFoldedMembers is the cheap test before foldedMembers, which walks every token: for a
// ListFragments body 25 µs and 164 allocations against 4 µs and one for this test, and 4 µs for
// its json.Unmarshal (BenchmarkDecodeMembers).
// It reports false only when body cannot hold a key that matches a member of t (at any depth)
// only when case is ignored: every member name stands in it as often in lower case as written
// exactly. A body with escapes or non-ASCII bytes (which fold in ways ToLower does not see: "ſ"
// is an "s" to encoding/json) takes the walk.
func mayHaveFoldedMembers(body []byte, t reflect.Type) bool {
	if bytes.IndexByte(body, '\\') >= 0 || slices.ContainsFunc(body, func(c byte) bool { return c >= 0x80 }) {
		return true
	}
	lower := bytes.ToLower(body)
	for _, name := range memberNames(t) {
		if bytes.Count(lower, name.lower) != bytes.Count(body, name.exact) {
			return true
		}
	}
	return false
}

// quotedName is a member name as it stands quoted in JSON, written exactly and in lower case.
type quotedName struct{ exact, lower []byte }

// memberNamesOf caches memberNames by request type.
var memberNamesOf sync.Map // reflect.Type → []quotedName

// memberNames lists the JSON member names of t's structs, at any depth (through pointers,
// slices, arrays and map values).
func memberNames(t reflect.Type) []quotedName {
	if v, ok := memberNamesOf.Load(t); ok {
		return v.([]quotedName)
	}
	var names []quotedName
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		t = deref(t)
		if t == nil || seen[t] {
			return
		}
		seen[t] = true
		switch t.Kind() {
		case reflect.Slice, reflect.Array, reflect.Map:
			walk(t.Elem())
		case reflect.Struct:
			for _, f := range reflect.VisibleFields(t) {
				tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				if f.IsExported() && !f.Anonymous && tag != "-" {
					q := `"` + cmp.Or(tag, f.Name) + `"`
					names = append(names, quotedName{[]byte(q), []byte(strings.ToLower(q))})
					walk(f.Type)
				}
			}
		}
	}
	walk(t)
	memberNamesOf.Store(t, names)
	return names
}

// foldedMembers returns the offsets in body, valid JSON for a request of type t, of the first
// character of each object key that names no member of its struct exactly but one when case is
// ignored. A key written with escapes cannot be renamed in place: it is an InvalidArgument.
func foldedMembers(body []byte, t reflect.Type) ([]int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var out []int
	// stack holds the open objects and arrays, each with the type it decodes into.
	type level struct {
		t         reflect.Type // the struct, map or slice type (nil: not a request type)
		isObject  bool
		expectKey bool
		member    reflect.Type // the type of the value after the last key
	}
	var stack []level
	next := t // the type of the next value
	// elemType is the type of the next value of an array on top of stack.
	elemType := func(stack []level) reflect.Type {
		if top := stack[len(stack)-1].t; top != nil && (top.Kind() == reflect.Slice || top.Kind() == reflect.Array) {
			return top.Elem()
		}
		return nil
	}
	// valueEnded moves on in the container on top of stack after one of its values.
	valueEnded := func(stack []level) {
		switch n := len(stack); {
		case n == 0:
		case stack[n-1].isObject:
			stack[n-1].expectKey = true
		default:
			next = elemType(stack)
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, invalidArgf("The request body is not valid JSON: %v.", err)
		}
		if n := len(stack); n > 0 && stack[n-1].isObject && stack[n-1].expectKey {
			top := &stack[n-1]
			key, ok := tok.(string)
			if !ok { // '}': the object, a value of the enclosing container, ended
				stack = stack[:n-1]
				valueEnded(stack)
				continue
			}
			top.expectKey = false
			top.member = nil
			switch st := structType(top.t); {
			case st != nil:
				if top.member = memberType(st, key); top.member == nil && foldedMember(st, key) {
					end := int(dec.InputOffset())
					start := end - len(key) - 2
					if start < 0 || string(body[start:end]) != `"`+key+`"` {
						return nil, invalidArgf("Member %q differs from a member of this operation only in case.", key)
					}
					out = append(out, start+1)
				}
			case top.t != nil && top.t.Kind() == reflect.Map:
				top.member = top.t.Elem()
			}
			next = top.member
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, level{t: deref(next), isObject: true, expectKey: true})
		case json.Delim('['):
			stack = append(stack, level{t: deref(next)})
			next = elemType(stack)
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueEnded(stack)
		default:
			valueEnded(stack)
		}
	}
}

// deref is t without its pointers (nil stays nil).
func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// structType is t when it is a struct (nil otherwise).
func structType(t reflect.Type) reflect.Type {
	if t != nil && t.Kind() == reflect.Struct {
		return t
	}
	return nil
}

// foldedMember reports whether struct t has a member named name in JSON when case is ignored.
func foldedMember(t reflect.Type, name string) bool {
	for _, f := range reflect.VisibleFields(t) {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && !f.Anonymous && tag != "-" && strings.EqualFold(cmp.Or(tag, f.Name), name) {
			return true
		}
	}
	return false
}

// memberPath is a type error's path (encoding/json's UnmarshalTypeError.Field) as the client
// wrote it, for a request of type t: encoding/json puts the Go name of an embedded struct in the
// path (streamRef.StreamName), a name the client never sent, so such names are left out.
func memberPath(t reflect.Type, field string) string {
	var out []string
	for _, name := range strings.Split(field, ".") {
		for t != nil && t.Kind() != reflect.Struct {
			switch t.Kind() {
			case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
				t = t.Elem()
			default:
				t = nil
			}
		}
		if t != nil {
			if f, ok := t.FieldByName(name); ok && f.Anonymous {
				t = f.Type
				continue
			}
		}
		out = append(out, name)
		t = memberType(t, name)
	}
	return strings.Join(out, ".")
}

// memberType is the type of struct t's member called name in JSON (nil when t is nil or has none).
func memberType(t reflect.Type, name string) reflect.Type {
	if t == nil {
		return nil
	}
	for _, f := range reflect.VisibleFields(t) {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && (tag == name || tag == "" && f.Name == name) {
			return f.Type
		}
	}
	return nil
}

// writeJSON sends a 200 response with v as its JSON body. v's optional members use omitempty (or
// are pointers) so that unset members are left out (kvs-api.md §1.4).
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	writeWhole(w, r, body, s.media.writeTimeout)
}

// writeWhole writes body, an answer held whole in memory (JSON, a playlist, an MP4 segment), as
// the streamed answers write theirs (pacedWriter: each piece within timeout, MediaWriteTimeout): a
// client that stops reading is dropped, so that its handler returns and body's memory goes (kvs
// server sets no http.Server WriteTimeout, which would cut the streamed answers), while one that
// reads slowly but steadily is not cut.
func writeWhole(w http.ResponseWriter, r *http.Request, body []byte, timeout time.Duration) {
	_ = newPacedWriter(w, r, http.NewResponseController(w), timeout).write(body)
}

// empty is the body of operations with no output members.
type empty struct{}

// Timestamp is a KVS JSON timestamp: a number of seconds since the Unix epoch (kvs-api.md §1.3).
//
// It unmarshals from any JSON number form: integer (botocore), decimal (the Go SDK sends
// milliseconds as 1700000000.123) or exponent (the real service's 1.625157638783E9), and rejects
// strings, non-finite values and values beyond year ±5000. A plain decimal (what the SDKs send)
// is read exactly, to the nanosecond; an exponent form to the microsecond.
// It marshals as a plain decimal with at most 3 fraction digits (milliseconds; trailing zeros and a
// whole-second fraction left out), which every client parses. The zero Timestamp marshals as 0; use
// *Timestamp with omitempty for optional members.
type Timestamp struct{ time.Time }

// maxTimestampSeconds bounds accepted timestamps (about year 5138) so that converting to
// time.Time cannot overflow.
const maxTimestampSeconds = 1e11

// MarshalJSON implements json.Marshaler.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return appendEpochMillis(nil, t.UnixMilli()), nil
}

// appendEpochMillis appends ms milliseconds as decimal seconds: 1705489836421 → 1705489836.421,
// 1705489836400 → 1705489836.4, 1705489836000 → 1705489836.
func appendEpochMillis(b []byte, ms int64) []byte {
	if ms < 0 {
		b = append(b, '-')
		ms = -ms // times before 1970; MinInt64 ms is out of time.Time's range anyway
	}
	sec, frac := ms/1000, ms%1000
	b = strconv.AppendInt(b, sec, 10)
	if frac == 0 {
		return b
	}
	digits := []byte{'.', byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	for digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	return append(b, digits...)
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return &json.UnmarshalTypeError{Value: "non-number timestamp", Type: timestampType}
	}
	if sec, nsec, ok := parsePlainSeconds(b); ok {
		// What both SDKs send, read exactly: as a float64, 4300000000.001 (a time in 2106)
		// rounded to 4300000000.001001, after a fragment at that millisecond.
		if sec > maxTimestampSeconds || sec < -maxTimestampSeconds {
			return &json.UnmarshalTypeError{Value: "number " + string(b), Type: timestampType}
		}
		t.Time = time.Unix(sec, nsec)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.Abs(f) > maxTimestampSeconds {
		return &json.UnmarshalTypeError{Value: "number " + string(b), Type: timestampType}
	}
	t.Time = time.UnixMicro(int64(math.Round(f * 1e6)))
	return nil
}

var timestampType = reflect.TypeFor[Timestamp]()

// parsePlainSeconds reads a JSON number without an exponent and with at most 12 integer digits
// ("1700000000", "-1.5", "1700000000.123456789") as seconds and nanoseconds, exactly (fraction
// digits past the nanosecond are dropped); ok is false for any other form.
func parsePlainSeconds(b []byte) (sec, nsec int64, ok bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	whole, frac, hasFrac := bytes.Cut(b, []byte("."))
	if len(whole) == 0 || len(whole) > 12 || hasFrac && len(frac) == 0 {
		return 0, 0, false
	}
	for _, c := range whole {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		sec = sec*10 + int64(c-'0')
	}
	for i, c := range frac {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		if i < 9 {
			nsec = nsec*10 + int64(c-'0')
		}
	}
	for i := len(frac); i < 9; i++ {
		nsec *= 10
	}
	if neg {
		sec, nsec = -sec, -nsec // time.Unix normalizes a negative nsec
	}
	return sec, nsec, true
}
