package cmd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/openkvs/kvs/client"
)

// uploadEndError is how an upload ended when the server refused the stream: a message in the
// CLI's words, with the producer's error kept for errors.As (exit codes) and the debug log.
type uploadEndError struct {
	msg string
	err error
}

func (e *uploadEndError) Error() string { return e.msg }
func (e *uploadEndError) Unwrap() error { return e.err }

// uploadEnd is the error of the producer's Close as put-media reports it. A stream deleted under
// the upload (ERROR 4008 STREAM_NOT_ACTIVE or 4507, or PutMedia's ResourceNotFoundException on a
// reconnection) and a KMS key that stopped working say so, with what to do, rather than the
// client's "putmedia: STREAM_NOT_ACTIVE (4008) …". checked is whether put-media found the stream
// before it started (not so when it started into a spool with the endpoint away).
func uploadEnd(err error, o putMediaOptions, checked bool) error {
	stream := o.Stream.String()
	var pe *client.ProducerError
	if !errors.As(err, &pe) || pe.Err == nil {
		return wrapAPI(err, "put-media %s", stream)
	}
	var ae *client.AckErr
	isAck := errors.As(pe.Err, &ae)
	var why, hint string
	gone := false // the stream does not exist (any more): exit status 3, as get-media's
	switch {
	case isAck && (ae.Ack.ErrorID == 4008 || ae.Ack.ErrorID == 4507), isNotFound(pe.Err) && checked:
		gone = true
		answer := "PutMedia answered " + strings.TrimSuffix(brief(pe.Err), ".")
		if isAck {
			answer = fmt.Sprintf("the server ended it with %s (%d)", ae.Ack.ErrorCode, ae.Ack.ErrorID)
		}
		why = "the stream was deleted (or stopped being active) during the upload: " + answer
		hint = "Make the stream again (`kvs create-stream " + o.Stream.flag() + "`, or put-media --create) and run put-media again: what was stored before went with the stream."
		if o.Stream.Name == "" {
			hint = "A stream ARN names one stream for good: make a new stream (`kvs create-stream --stream-name NAME`) and run put-media again with its name or ARN."
		}
	case isNotFound(pe.Err):
		gone = true
		why = "the stream does not exist: " + brief(pe.Err)
		hint = "Add --create to make it, or check the name: `kvs list-streams` lists the streams."
	case isAck && ae.Fatal(): // the stream's KMS key
		why = fmt.Sprintf("the server ended the upload with %s (%d): %s", ae.Ack.ErrorCode, ae.Ack.ErrorID, client.AckErrorMeanings[ae.Ack.ErrorID])
		hint = "Check the stream's KMS key (`kvs describe-stream " + o.Stream.flag() + "` shows its KmsKeyId) and that the producer may use it, then run put-media again."
	default:
		return wrapAPI(err, "put-media %s", stream)
	}
	if o.SpoolDir != "" && pe.Spooled > 0 {
		hint += " The spool keeps what was not sent: run again with the same --spool-dir."
	}
	parts := []string{fmt.Sprintf("put-media %s: %s", stream, why)}
	rest := *pe
	rest.Err = nil
	if same := len(pe.Failed) > 0; same {
		for _, f := range pe.Failed {
			same = same && errors.Is(f.Err, pe.Err)
		}
		if same {
			parts = append(parts, fmt.Sprintf("%d %s not stored", len(pe.Failed), plural(len(pe.Failed), "fragment", "fragments")))
			rest.Failed = nil
		}
	}
	if len(rest.Failed) > 0 || rest.Spooled > 0 || rest.Dropped > 0 || rest.Corrupt > 0 {
		parts = append(parts, strings.TrimPrefix(rest.Error(), "putmedia: "))
	}
	e := withHint(&uploadEndError{msg: strings.Join(parts, "; "), err: err}, hint)
	if gone {
		return notFoundError{e}
	}
	return e
}

// plural is one when n is 1, else many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
