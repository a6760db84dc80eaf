package cmd

import (
	"testing"
	"time"

	"github.com/openkvs/kvs/client"
)

func TestMediaOptionsValidate(t *testing.T) {
	t.Parallel()
	named := streamRef{Name: "s"}
	put := putMediaOptions{Stream: named, Source: "clip.mkv", FragmentDuration: 2 * time.Second, RetentionHours: 24, Output: "text"}
	get := getMediaOptions{Stream: named, StartSelector: "NOW", Format: formatMKV}
	list := listFragmentsOptions{Stream: named, Range: fragmentRange{TimestampType: "server"}, Output: outputJSON}
	frags := getFragmentsOptions{Stream: named, Range: fragmentRange{TimestampType: "server"}, Parallel: 4, Format: formatMKV}
	cases := []struct {
		name    string
		opts    interface{ validate() error }
		wantErr bool
	}{
		{"put ok", put, false},
		{"put no stream", func() putMediaOptions { o := put; o.Stream = streamRef{}; return o }(), true},
		{"put no source", func() putMediaOptions { o := put; o.Source = ""; return o }(), true},
		{"put zero duration", func() putMediaOptions { o := put; o.FragmentDuration = 0; return o }(), true},
		{"put duration too long", func() putMediaOptions { o := put; o.FragmentDuration = time.Minute; return o }(), true},
		{"put duration longer than KVS takes", func() putMediaOptions { o := put; o.FragmentDuration = 15 * time.Second; return o }(), true},
		{"put duration of KVS's maximum", func() putMediaOptions { o := put; o.FragmentDuration = 10 * time.Second; return o }(), false},
		{"put negative frame rate", func() putMediaOptions { o := put; o.FrameRate = -1; return o }(), true},
		{"put bad retention", func() putMediaOptions { o := put; o.RetentionHours = 87601; return o }(), true},
		{"put loop stdin", func() putMediaOptions { o := put; o.Loop, o.Source = true, "-"; return o }(), true},
		{"put create by arn", func() putMediaOptions { o := put; o.Create, o.Stream = true, streamRef{ARN: "arn:x"}; return o }(), true},
		{"put json", func() putMediaOptions { o := put; o.Output = outputJSON; return o }(), false},
		{"put table", func() putMediaOptions { o := put; o.Output = outputTable; return o }(), true},
		{"put camera without device", func() putMediaOptions { o := put; o.Source = "camera:"; return o }(), true},
		{"put rtsp", func() putMediaOptions { o := put; o.Source, o.Duration = "rtsp://cam/s", time.Minute; return o }(), false},
		{"put rtsp udp", func() putMediaOptions { o := put; o.Source, o.RTSPTransport = "rtsps://cam/s", "udp"; return o }(), false},
		{"put rtsp bad transport", func() putMediaOptions { o := put; o.Source, o.RTSPTransport = "rtsp://cam/s", "sctp"; return o }(), true},
		{"put rtsp size", func() putMediaOptions { o := put; o.Source, o.Width = "rtsp://cam/s", 640; return o }(), true},
		{"put rtsp loop", func() putMediaOptions { o := put; o.Source, o.Loop = "rtsp://cam/s", true; return o }(), true},
		{"put rtsp flags with a file", func() putMediaOptions { o := put; o.RTSPTransport = "udp"; return o }(), true},
		{"put ca file with a file", func() putMediaOptions { o := put; o.RTSPCAFile = "ca.pem"; return o }(), true},
		{"put spool", func() putMediaOptions {
			o := put
			o.SpoolDir, o.SpoolMaxBytes, o.SpoolRate = "/s", 1<<30, 1e6
			return o
		}(), false},
		{"put spool too small", func() putMediaOptions { o := put; o.SpoolDir, o.SpoolMaxBytes = "/s", 1000; return o }(), true},
		{"put spool rate without spool", func() putMediaOptions { o := put; o.SpoolRate = 1e6; return o }(), true},
		{"put negative duration", func() putMediaOptions { o := put; o.Source, o.Duration = "rtsp://cam/s", -time.Second; return o }(), true},

		{"get ok", get, false},
		{"get lower-case selector", func() getMediaOptions { o := get; o.StartSelector = "earliest"; return o }(), false},
		{"get bad selector", func() getMediaOptions { o := get; o.StartSelector = "LATER"; return o }(), true},
		{"get fragment number", func() getMediaOptions {
			o := get
			o.StartSelector, o.FragmentNumber = "FRAGMENT_NUMBER", "913"
			return o
		}(), false},
		{"get fragment number missing", func() getMediaOptions { o := get; o.StartSelector = "FRAGMENT_NUMBER"; return o }(), true},
		{"get timestamp", func() getMediaOptions {
			o := get
			o.StartSelector, o.StartTimestamp = "PRODUCER_TIMESTAMP", "-10m"
			return o
		}(), false},
		{"get bad timestamp", func() getMediaOptions {
			o := get
			o.StartSelector, o.StartTimestamp = "SERVER_TIMESTAMP", "soon"
			return o
		}(), true},
		{"get stray flag", func() getMediaOptions { o := get; o.ContinuationToken = "x"; return o }(), true},
		{"get token", func() getMediaOptions {
			o := get
			o.StartSelector, o.ContinuationToken = "CONTINUATION_TOKEN", "913"
			return o
		}(), false},
		{"get bad format", func() getMediaOptions { o := get; o.Format = "mp4"; return o }(), true},
		{"get negative max", func() getMediaOptions { o := get; o.MaxFragments = -1; return o }(), true},

		{"list ok", list, false},
		{"list producer numbers", func() listFragmentsOptions {
			o := list
			o.Range.TimestampType, o.Output = "producer", outputNumbers
			return o
		}(), false},
		{"list bad type", func() listFragmentsOptions { o := list; o.Range.TimestampType = "arrival"; return o }(), true},
		{"list end before start", func() listFragmentsOptions { o := list; o.Range.Start, o.Range.End = "-1m", "-1h"; return o }(), true},
		{"list bad output", func() listFragmentsOptions { o := list; o.Output = "yaml"; return o }(), true},

		{"frags ok", frags, false},
		{"frags numbers", func() getFragmentsOptions { o := frags; o.FragmentNumbers = []string{"1,2", "3"}; return o }(), false},
		{"frags not numbers", func() getFragmentsOptions { o := frags; o.FragmentNumbers = []string{"1x"}; return o }(), true},
		{"frags numbers and range", func() getFragmentsOptions {
			o := frags
			o.FragmentNumbers, o.Range.Start = []string{"1"}, "-1h"
			return o
		}(), true},
		{"frags zero parallel", func() getFragmentsOptions { o := frags; o.Parallel = 0; return o }(), true},
		{"frags file and dir", func() getFragmentsOptions { o := frags; o.OutFile, o.OutDir = "a", "b"; return o }(), true},
		{"frags raw", func() getFragmentsOptions { o := frags; o.Format = formatRaw; return o }(), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.opts.validate(); (err != nil) != tc.wantErr {
				t.Errorf("validate() = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestGetMediaSelector(t *testing.T) {
	t.Parallel()
	now := time.Unix(1705489836, 421e6)
	o := getMediaOptions{StartSelector: "server_timestamp", StartTimestamp: "-1m"}
	sel, err := o.selector(now)
	if err != nil || sel.Type != client.StartServerTimestamp || !sel.StartTimestamp.Equal(now.Add(-time.Minute)) {
		t.Errorf("selector = %+v, %v", sel, err)
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64 // -1: an error
	}{
		{"1048576", 1 << 20}, {"1GiB", 1 << 30}, {"1.5gib", 3 << 29}, {"500MB", 500e6}, {"500 mb", 500e6},
		{"8Mbit", -1}, {"256KiB", 256 << 10}, {"2k", 2000}, {"10B", 10}, {"0", 0},
		{"", -1}, {"-1", -1}, {"1XB", -1}, {"lots", -1}, {"1e30", -1},
	} {
		got, err := parseByteSize(tc.in)
		if tc.want < 0 && err == nil || tc.want >= 0 && (err != nil || got != tc.want) {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	var rate byteRate // --spool-rate takes bits too
	if err := rate.Set("8Mbit"); err != nil || rate != 1e6 {
		t.Errorf("byteRate.Set(8Mbit) = %d, %v; want 1000000", rate, err)
	}
	for n, want := range map[int64]string{1 << 30: "1GiB", 3 << 29: "1.5GiB", 1000: "1000B", 256 << 10: "256KiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
