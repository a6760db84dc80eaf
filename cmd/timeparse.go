package cmd

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/openkvs/kvs/client"
	"github.com/spf13/pflag"
)

// parseTime reads a time flag value in one of three forms:
//
//   - RFC 3339, with optional fraction: 2024-01-17T11:10:36Z, 2024-01-17T11:10:36.421+02:00;
//     without a zone (2024-01-17T11:10:36) it is UTC, as the AWS CLI reads it
//   - Unix seconds with optional fraction (up to nanoseconds): 1705489836, 1705489836.421
//   - relative to now: "now", or a signed Go duration such as -10m, -1h30m, +5s; units may also
//     be d (24 h) as in -2d
//
// now is the reference for relative forms. The result is clamped to the times the AWS SDK can
// send (client.MinTime to client.MaxTime): no fragment lies outside them, so a bound beyond them
// selects as it reads.
func parseTime(s string, now time.Time) (time.Time, error) {
	t, err := parseTimeUnclamped(s, now)
	if err != nil {
		return t, err
	}
	if t.Before(client.MinTime) {
		return client.MinTime, nil
	}
	if t.After(client.MaxTime) {
		return client.MaxTime, nil
	}
	return t, nil
}

func parseTimeUnclamped(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("empty time")
	}
	if strings.EqualFold(s, "now") {
		return now, nil
	}
	if s[0] == '-' || s[0] == '+' {
		d, err := parseRelative(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", s, err)
		}
		if s[0] == '-' {
			d = -d
		}
		return now.Add(d), nil
	}
	if s[0] >= '0' && s[0] <= '9' && !strings.ContainsAny(s, "-:T") {
		t, err := parseUnix(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", s, unixHint(s, err))
		}
		return t, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		// Without a zone it is UTC, as the AWS CLI takes it (botocore's parse_to_aware_datetime).
		t, err = time.Parse("2006-01-02T15:04:05.999999999", s)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2024-01-17T11:10:36Z; without a zone: UTC), Unix seconds (1705489836.421) or relative (now, -10m, -1h30m)", s)
	}
	return t, nil
}

// parseRelative parses an unsigned Go duration, with "d" accepted for days at the start.
func parseRelative(s string) (time.Duration, error) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, errors.New("bad day count")
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	if s == "" || s[0] == '-' || s[0] == '+' {
		return 0, errors.New("want a duration such as 10m or 1h30m")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("want a duration such as 10m or 1h30m")
	}
	return days + d, nil
}

// unixHint turns parseUnix's error for s, which starts with a digit, into one that says how to
// write what s most likely meant: a relative time without its sign (1h), or Unix milliseconds.
func unixHint(s string, err error) error {
	if _, rerr := parseRelative(s); rerr == nil {
		return fmt.Errorf("a relative time needs a sign: -%s for %s ago, +%s from now", s, s, s)
	}
	if len(s) >= 13 && len(s) <= 15 && strings.Trim(s, "0123456789") == "" {
		return fmt.Errorf("%w; in Unix milliseconds? then give seconds: %s.%s", err, s[:len(s)-3], s[len(s)-3:])
	}
	return err
}

// maxUnixSeconds is 9999-12-31T23:59:59Z, the last instant RFC 3339 can write.
const maxUnixSeconds = 253402300799

// parseUnix parses decimal Unix seconds exactly (no float rounding).
func parseUnix(s string) (time.Time, error) {
	whole, frac, hasFrac := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || sec > maxUnixSeconds {
		return time.Time{}, errors.New("bad Unix seconds (at most 253402300799, the end of year 9999)")
	}
	var nsec int64
	if hasFrac {
		if frac == "" || len(frac) > 9 {
			return time.Time{}, errors.New("want 1 to 9 fraction digits")
		}
		for _, c := range frac {
			if c < '0' || c > '9' {
				return time.Time{}, errors.New("bad fraction")
			}
		}
		n, _ := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		nsec = n
	}
	return time.Unix(sec, nsec), nil
}

// timestampType maps --timestamp-type (server, producer, or the KVS names) to the API value.
func parseTimestampType(s string) (client.TimestampType, error) {
	switch strings.ToUpper(s) {
	case "SERVER", string(client.ServerTimestamp):
		return client.ServerTimestamp, nil
	case "PRODUCER", string(client.ProducerTimestamp):
		return client.ProducerTimestamp, nil
	}
	return "", fmt.Errorf("--timestamp-type %q: want server or producer", s)
}

// timeRange parses --start/--end; either may be empty (open end).
func timeRange(start, end string, now time.Time) (from, to time.Time, err error) {
	if start != "" {
		if from, err = parseTime(start, now); err != nil {
			return from, to, fmt.Errorf("--start: %w", err)
		}
	}
	if end != "" {
		if to, err = parseTime(end, now); err != nil {
			return from, to, fmt.Errorf("--end: %w", err)
		}
	}
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		return from, to, errors.New("--end is before --start")
	}
	return from, to, nil
}

// fragmentRange is --start, --end and --timestamp-type: the fragments whose start time on the
// server's or the producer's clock is in [--start, --end], both inclusive, either open when not
// given.
type fragmentRange struct {
	Start, End    string
	TimestampType string
}

// addFlags registers the three flags; start and end say what the bounds mean to the command.
func (r *fragmentRange) addFlags(f *pflag.FlagSet, start, end string) {
	f.StringVar(&r.Start, "start", "", start)
	f.StringVar(&r.End, "end", "", end)
	f.StringVar(&r.TimestampType, "timestamp-type", "server", "which timestamp --start/--end select on: server or producer")
}

func (r fragmentRange) validate() error {
	_, _, _, err := r.resolve(time.Now())
	return err
}

// resolve returns the bounds (zero when open) and the timestamp type; relative times count from
// now.
func (r fragmentRange) resolve(now time.Time) (from, to time.Time, typ client.TimestampType, err error) {
	if typ, err = parseTimestampType(r.TimestampType); err != nil {
		return from, to, typ, err
	}
	from, to, err = timeRange(r.Start, r.End, now)
	return from, to, typ, err
}
