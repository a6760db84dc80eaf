package cmd

import (
	"strings"
	"testing"
	"time"
)

var timeParseTests = []struct {
	name    string
	in      string
	want    time.Time
	wantErr bool
}{
	{"now", "now", testNow, false},
	{"NOW", "NOW", testNow, false},
	{"minus minutes", "-10m", testNow.Add(-10 * time.Minute), false},
	{"minus compound", "-1h30m", testNow.Add(-90 * time.Minute), false},
	{"plus seconds", "+5s", testNow.Add(5 * time.Second), false},
	{"days", "-2d", testNow.Add(-48 * time.Hour), false},
	{"days and hours", "-1d12h", testNow.Add(-36 * time.Hour), false},
	{"rfc3339", "2024-01-17T11:10:36Z", time.Date(2024, 1, 17, 11, 10, 36, 0, time.UTC), false},
	{"rfc3339 fraction offset", "2024-01-17T13:10:36.421+02:00", time.Date(2024, 1, 17, 11, 10, 36, 421e6, time.UTC), false},
	{"rfc3339 without zone: UTC", "2024-01-17T11:10:36.5", time.Date(2024, 1, 17, 11, 10, 36, 5e8, time.UTC), false},
	{"unix", "1705489836", time.Unix(1705489836, 0), false},
	{"unix fraction", "1705489836.421", time.Unix(1705489836, 421e6), false},
	{"unix nanos", "1705489836.000000001", time.Unix(1705489836, 1), false},
	{"unix one digit", "1705489836.5", time.Unix(1705489836, 5e8), false},
	{"empty", "", time.Time{}, true},
	{"garbage", "yesterday", time.Time{}, true},
	{"bare duration", "10m", time.Time{}, true},
	{"double sign", "--10m", time.Time{}, true},
	{"unix bad fraction", "1705489836.", time.Time{}, true},
	{"unix too precise", "1.0000000001", time.Time{}, true},
	{"unix letters", "17054x", time.Time{}, true},
	{"date only", "2024-01-17", time.Time{}, true},
	{"sign only", "-", time.Time{}, true},
}

var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func TestParseTime(t *testing.T) {
	t.Parallel()
	for _, tc := range timeParseTests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTime(tc.in, testNow)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseTime(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if err == nil && !got.Equal(tc.want) {
				t.Errorf("parseTime(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzParseTime(f *testing.F) {
	for _, tc := range timeParseTests {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTime(s, testNow)
		if err != nil {
			return
		}
		// Whatever parses as an absolute time prints back to the same instant in both forms.
		if s != "" && s[0] != '-' && s[0] != '+' && len(s) > 0 && s[0] >= '0' && s[0] <= '9' {
			back, err := parseTime(got.UTC().Format(time.RFC3339Nano), testNow)
			if err != nil || !back.Equal(got) {
				t.Fatalf("%q → %v → %v, %v", s, got, back, err)
			}
		}
	})
}

// A time flag value that is almost right says how to write it: "--start 1h" read as Unix seconds
// was "bad Unix seconds (at most 253402300799, ...)", which sent the user looking at the wrong
// form; milliseconds (date +%s%3N, JavaScript's Date.now()) get the same help.
func TestParseTimeErrorSaysWhatToWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"duration without sign", "1h", "-1h"},
		{"days without sign", "2d", "-2d"},
		{"compound without sign", "1h30m", "-1h30m"},
		{"milliseconds", "1705489836421", "1705489836.421"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTime(tc.in, testNow)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseTime(%q) error %v, want one that suggests %q", tc.in, err, tc.want)
			}
		})
	}
}
