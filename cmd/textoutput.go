package cmd

// --output text: the AWS CLI's text format (awscli/text.py), which shell scripts read with cut and
// awk. A response is a tree of objects (map[string]any), lists ([]any) and scalars (strings, as
// printed); the CLI prints an object's scalar members on one line, tab-separated, in the order of
// their names and led by the name it is under in upper case, and then each of its other members
// the same way, named by their own key. The objects of a list share one set of columns: the scalar
// members any of them has, an absent one printing as nothing.

import (
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
)

// textWriter prints responses in the AWS CLI's text format; it keeps the first write error.
type textWriter struct {
	w   io.Writer
	err error
}

// writeText prints v as `aws --output text` prints the response v.
func writeText(w io.Writer, v any) error {
	t := &textWriter{w: w}
	t.item(v, "", nil)
	return t.err
}

func (t *textWriter) line(s string) {
	if t.err == nil {
		_, t.err = io.WriteString(t.w, s+"\n")
	}
}

// item is text.py's _format_text: id is the key v is under ("" at the top), scalarKeys the
// columns of the list v is in (nil: v's own).
func (t *textWriter) item(v any, id string, scalarKeys []string) {
	switch v := v.(type) {
	case map[string]any:
		t.object(v, id, scalarKeys)
	case []any:
		t.list(v, id)
	default:
		t.line(v.(string))
	}
}

func isScalar(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return false
	}
	return true
}

// object is _format_dict.
func (t *textWriter) object(m map[string]any, id string, scalarKeys []string) {
	var scalars []string
	var others []string
	if scalarKeys == nil {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if isScalar(m[k]) {
				scalars = append(scalars, m[k].(string))
			} else {
				others = append(others, k)
			}
		}
	} else {
		for _, k := range scalarKeys {
			s, _ := m[k].(string)
			scalars = append(scalars, s)
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !slices.Contains(scalarKeys, k) {
				others = append(others, k)
			}
		}
	}
	if len(scalars) > 0 {
		if id != "" {
			scalars = append([]string{strings.ToUpper(id)}, scalars...)
		}
		t.line(strings.Join(scalars, "\t"))
	}
	for _, k := range others {
		t.item(m[k], k, nil)
	}
}

// list is _format_list.
func (t *textWriter) list(l []any, id string) {
	if len(l) == 0 {
		return
	}
	var scalars, others []any
	objects := false
	for _, e := range l {
		if isScalar(e) {
			scalars = append(scalars, e)
		} else {
			others = append(others, e)
			_, ok := e.(map[string]any)
			objects = objects || ok
		}
	}
	switch {
	case objects:
		keys := map[string]bool{}
		for _, e := range l {
			if m, ok := e.(map[string]any); ok {
				for k, v := range m {
					if isScalar(v) {
						keys[k] = true
					}
				}
			}
		}
		columns := slices.Sorted(maps.Keys(keys))
		if columns == nil {
			columns = []string{}
		}
		for _, e := range l {
			t.item(e, id, columns)
		}
		return
	case len(others) > 0:
		if len(scalars) > 0 {
			t.scalarList(scalars, id)
		}
		for _, e := range others {
			t.item(e, id, nil)
		}
		return
	}
	t.scalarList(scalars, id)
}

// scalarList is _format_scalar_list.
func (t *textWriter) scalarList(l []any, id string) {
	if id == "" {
		s := make([]string, len(l))
		for i, e := range l {
			s[i] = e.(string)
		}
		t.line(strings.Join(s, "\t"))
		return
	}
	for _, e := range l {
		t.line(strings.ToUpper(id) + "\t" + e.(string))
	}
}

// textTime is a timestamp as the AWS CLI v2 prints it (cli_timestamp_format iso8601, its default):
// Python's isoformat in the local time zone, microseconds only when there are any
// ("2024-01-17T11:10:36.421000+00:00", "2024-01-17T11:10:37+00:00").
func textTime(t time.Time) string {
	t = t.Round(time.Microsecond).Local()
	if t.Nanosecond() == 0 {
		return t.Format("2006-01-02T15:04:05-07:00")
	}
	return t.Format("2006-01-02T15:04:05.000000-07:00")
}

// putText sets m[k] to *v when v is not nil: a member the answer does not have is not printed.
func putText[T any](m map[string]any, k string, v *T, format func(T) string) {
	if v != nil {
		m[k] = format(*v)
	}
}

func itoa32(i int32) string { return strconv.Itoa(int(i)) }
func same(s string) string  { return s }

// streamInfoText is a StreamInfo as the AWS CLI has it: the members the answer has.
func streamInfoText(si *types.StreamInfo) map[string]any {
	m := map[string]any{}
	putText(m, "DeviceName", si.DeviceName, same)
	putText(m, "StreamName", si.StreamName, same)
	putText(m, "StreamARN", si.StreamARN, same)
	putText(m, "MediaType", si.MediaType, same)
	putText(m, "KmsKeyId", si.KmsKeyId, same)
	putText(m, "Version", si.Version, same)
	if si.Status != "" {
		m["Status"] = string(si.Status)
	}
	putText(m, "CreationTime", si.CreationTime, textTime)
	putText(m, "DataRetentionInHours", si.DataRetentionInHours, itoa32)
	return m
}

// tagsText is a Tags map as the AWS CLI has it.
func tagsText(tags map[string]string) map[string]any {
	m := make(map[string]any, len(tags))
	for k, v := range tags {
		m[k] = v
	}
	return m
}
