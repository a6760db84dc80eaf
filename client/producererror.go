package client

import (
	"fmt"
	"strings"
)

// FragmentFailure is a fragment the producer gave up on.
type FragmentFailure struct {
	// Timecode is the fragment's cluster timecode as sent (ticks; epoch ms for ABSOLUTE timecodes).
	Timecode int64
	// FragmentNumber is the number the server gave it, when known.
	FragmentNumber string
	Err            error
}

// ProducerError is returned by Close when fragments were not stored: Failed lists them in send
// order. Err, when not nil, is what stopped the producer (unreachable server, a fatal ERROR ack,
// a cancelled Close). With a spool, the fragments not sent are not failures: Spooled counts what
// the spool keeps for a later producer, Dropped what was dropped because it was full, and
// Corrupt what could not be read back from it (a damaged disk) and was skipped.
type ProducerError struct {
	Failed   []FragmentFailure
	Err      error
	Spooled  int
	SpoolDir string
	Dropped  int
	Corrupt  int
}

func (e *ProducerError) Error() string {
	var parts []string
	prefix := "putmedia: "
	if e.Err != nil {
		s := e.Err.Error()
		if strings.HasPrefix(s, "putmedia") { // "putmedia: …" (an ERROR ack), "putmedia STREAM: …"
			prefix = ""
		}
		parts = append(parts, s)
	}
	if e.Spooled > 0 {
		parts = append(parts, fmt.Sprintf("%d fragment(s) not sent are kept in the spool %s: run again with the same spool directory to send them", e.Spooled, e.SpoolDir))
	}
	if e.Dropped > 0 {
		parts = append(parts, fmt.Sprintf("%d fragment(s) were dropped because the spool %s was full", e.Dropped, e.SpoolDir))
	}
	if e.Corrupt > 0 {
		parts = append(parts, fmt.Sprintf("%d fragment(s) in the spool %s could not be read back (damaged records) and were not sent", e.Corrupt, e.SpoolDir))
	}
	if len(e.Failed) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d fragment(s) not stored:", len(e.Failed))
		groups := groupFailures(e.Failed)
		for i, g := range groups {
			if i == 10 {
				fmt.Fprintf(&b, " … and %d more reasons", len(groups)-i)
				break
			}
			f := g.first
			switch {
			case g.n > 1:
				fmt.Fprintf(&b, " [%d fragments, timecodes %d to %d", g.n, f.Timecode, g.last.Timecode)
			case f.FragmentNumber != "":
				fmt.Fprintf(&b, " [timecode %d fragment %s", f.Timecode, f.FragmentNumber)
			default:
				fmt.Fprintf(&b, " [timecode %d", f.Timecode)
			}
			fmt.Fprintf(&b, ": %s]", g.reason)
		}
		parts = append(parts, b.String())
	}
	return prefix + strings.Join(parts, "; ")
}

// failureGroup is the failed fragments that share a reason: how many, the first and the last.
type failureGroup struct {
	reason      string
	n           int
	first, last FragmentFailure
}

// groupFailures groups failed by reason, in the order of each reason's first fragment: a stream
// deleted under the producer fails every pending fragment for the same reason, which is then
// said once.
func groupFailures(failed []FragmentFailure) []failureGroup {
	var groups []failureGroup
	index := make(map[string]int)
	for _, f := range failed {
		r := f.reason()
		i, ok := index[r]
		if !ok {
			i = len(groups)
			index[r] = i
			groups = append(groups, failureGroup{reason: r, first: f})
		}
		groups[i].n++
		groups[i].last = f
	}
	return groups
}

// reason is f.Err's message without what the list around it already says: the "putmedia: " or
// "putmedia STREAM: " prefix and the fragment's number.
func (f FragmentFailure) reason() string {
	s := fmt.Sprint(f.Err)
	if head, rest, ok := strings.Cut(s, ": "); ok && (head == "putmedia" || strings.HasPrefix(head, "putmedia ") && !strings.Contains(head[len("putmedia "):], " ")) {
		s = rest
	}
	if f.FragmentNumber != "" {
		s = strings.TrimPrefix(s, "fragment "+f.FragmentNumber+": ")
	}
	return s
}

// Unwrap returns the stopping error and the fragment errors, for errors.Is/As.
func (e *ProducerError) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	for _, f := range e.Failed {
		errs = append(errs, f.Err)
	}
	return errs
}
