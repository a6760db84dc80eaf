package client

import (
	"errors"
	"strings"
	"testing"
)

// Every part of the message once, separated by one "; " (with an error, spooled and failed
// fragments it read "…; ; …").
func TestProducerErrorMessage(t *testing.T) {
	t.Parallel()
	e := &ProducerError{Err: errors.New("connection reset"), Spooled: 2, Dropped: 1, SpoolDir: "/var/spool/cam",
		Failed: []FragmentFailure{{Timecode: 1000, FragmentNumber: "91343852333000000000000000000000000000000000001", Err: errors.New("ERROR 5001")}}}
	want := "putmedia: connection reset; 2 fragment(s) not sent are kept in the spool /var/spool/cam: run again with the same spool directory to send them; " +
		"1 fragment(s) were dropped because the spool /var/spool/cam was full; 1 fragment(s) not stored: [timecode 1000 fragment 91343852333000000000000000000000000000000000001: ERROR 5001]"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%q\nwant\n%q", got, want)
	}
	if got := (&ProducerError{Err: errors.New("x"), Spooled: 1, SpoolDir: "d"}).Error(); strings.Contains(got, "; ;") {
		t.Errorf("Error() = %q", got)
	}
}
