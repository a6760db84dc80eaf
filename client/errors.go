package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
)

// APIError is a non-2xx answer to a request the SDKs do not model (PutMedia, GetMedia). It
// implements smithy.APIError, like the SDK's own typed errors, so that callers match both with
// one errors.As (cmd maps ErrorCode() == "ResourceNotFoundException" to its not-found exit code).
type APIError struct {
	// Op is the API operation, e.g. "GetMedia".
	Op string
	// Status is the HTTP status code.
	Status int
	// Code is the KVS error type (x-amzn-ErrorType, else the body's __type or code), sanitised as
	// the SDKs do; when neither is present, the HTTP status text.
	Code string
	// Message is the body's Message (or message), else the start of a non-JSON body.
	Message string
	// RequestID is x-amzn-RequestId, when present.
	RequestID string
	// Endpoint is scheme://host[:port] of the request (a data endpoint), when known.
	Endpoint string

	untyped bool // no error type in the answer: Code is the status text
	skewed  bool // a signature refused for its time, which was over skewThreshold off the answer's Date
}

var _ smithy.APIError = (*APIError)(nil)

func (e *APIError) Error() string {
	s := fmt.Sprintf("%s: %s (HTTP %d)", e.Op, e.Code, e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// NotKVS reports whether the answer named no KVS error type at all (no x-amzn-ErrorType header, no
// __type or code in a JSON body), so that Code is only the HTTP status text: the endpoint is most
// likely not a KVS server (another web server, a proxy, a wrong port).
func (e *APIError) NotKVS() bool { return e.untyped }

// ErrorCode returns the KVS error type, e.g. "ResourceNotFoundException".
func (e *APIError) ErrorCode() string { return e.Code }

// ErrorMessage returns the server's message.
func (e *APIError) ErrorMessage() string { return e.Message }

// ErrorFault says whether the server (5xx) or the client (4xx) is at fault.
func (e *APIError) ErrorFault() smithy.ErrorFault {
	if e.Status >= 500 {
		return smithy.FaultServer
	}
	return smithy.FaultClient
}

// Retryable reports whether the same request may succeed later: server errors, throttling,
// connection limits, and a signature refused because the local clock is off (the retry is signed
// at the server's time, clock.go).
func (e *APIError) Retryable() bool {
	if e.skewed {
		return true
	}
	switch e.Code {
	case "ClientLimitExceededException", "ConnectionLimitExceededException":
		return true
	}
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// CredentialsError is a failure to get the credentials a request is signed with (none configured
// for an AWS endpoint, an expired SSO session, a failing credential_process, ...): the request was
// not sent. Err is the SDK's credential chain's error.
type CredentialsError struct{ Err error }

func (e *CredentialsError) Error() string { return "get AWS credentials: " + e.Err.Error() }

func (e *CredentialsError) Unwrap() error { return e.Err }

// credentialsProvider marks the errors of the provider it wraps as CredentialsErrors.
type credentialsProvider struct{ aws.CredentialsProvider }

func (p credentialsProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	creds, err := p.CredentialsProvider.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		return creds, &CredentialsError{Err: err}
	}
	return creds, err
}

// noCredentials reports whether err is a failure to get credentials (CredentialsError).
func noCredentials(err error) bool {
	var ce *CredentialsError
	return errors.As(err, &ce)
}

// maxErrorBody caps how much of an error response is read.
const maxErrorBody = 64 << 10

// newAPIError reads resp (a non-2xx response) into an *APIError. It does not close the body.
func newAPIError(op string, resp *http.Response) *APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Op: op, Status: resp.StatusCode, RequestID: resp.Header.Get("X-Amzn-Requestid")}
	if resp.Request != nil && resp.Request.URL != nil {
		e.Endpoint = resp.Request.URL.Scheme + "://" + resp.Request.URL.Host
	}
	e.Code = sanitizeErrorCode(resp.Header.Get("X-Amzn-Errortype"))
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) == nil {
		for k, v := range fields {
			var s string
			if json.Unmarshal(v, &s) != nil {
				continue
			}
			switch strings.ToLower(k) {
			case "message":
				e.Message = s
			case "__type", "code":
				if c := sanitizeErrorCode(s); c != "" {
					e.Code = c
				}
			}
		}
	} else if b := bytes.TrimSpace(body); len(b) > 0 {
		e.Message = string(truncate(b, 200))
	}
	e.skewed = signedTooFarOff(e.Code, resp)
	if e.Code == "" {
		e.untyped = true
		e.Code = http.StatusText(resp.StatusCode)
		if e.Code == "" {
			e.Code = fmt.Sprintf("HTTP%d", resp.StatusCode)
		}
	}
	return e
}

// sanitizeErrorCode drops what the SDKs drop from an error type: a ":..." suffix (the real service
// appends a documentation URL) and a "...#" namespace prefix.
func sanitizeErrorCode(s string) string {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '#'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}

// permanent reports whether err is an answer that retrying the same request cannot fix: a client
// fault (4xx) other than throttling and connection limits, also from an endpoint whose answer is not
// a KVS error (the SDK reports those as deserialization errors).
func permanent(err error) bool {
	var ae smithy.APIError
	var status interface{ HTTPStatusCode() int }
	if !errors.As(err, &ae) {
		if errors.As(err, &status) {
			return clientFault(status.HTTPStatusCode())
		}
		return false
	}
	switch ae.ErrorCode() {
	case "ClientLimitExceededException", "ConnectionLimitExceededException", "ThrottlingException", "RequestTimeout":
		return false
	}
	var own *APIError
	if errors.As(err, &own) {
		return !own.Retryable()
	}
	// The SDK's error types that the service model does not name (InternalFailure, a proxy's
	// 503) are GenericAPIErrors of unknown fault: the HTTP status says whose fault it is.
	if ae.ErrorFault() == smithy.FaultUnknown && errors.As(err, &status) {
		return clientFault(status.HTTPStatusCode())
	}
	return ae.ErrorFault() != smithy.FaultServer
}

// clientFault reports an HTTP status that sending the same request again cannot change.
func clientFault(s int) bool {
	return s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests
}
