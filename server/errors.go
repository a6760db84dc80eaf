package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/openkvs/kvs/server/store"
)

// KVS error type names used by this package (the x-amzn-ErrorType values; kvs-api.md §1.5).
const (
	codeInvalidArgument        = "InvalidArgumentException"
	codeResourceNotFound       = "ResourceNotFoundException"
	codeNotAuthorized          = "NotAuthorizedException"
	codeResourceInUse          = "ResourceInUseException"
	codeVersionMismatch        = "VersionMismatchException"
	codeTagsPerResourceLimit   = "TagsPerResourceExceededLimitException"
	codeInvalidResourceFormat  = "InvalidResourceFormatException"
	codeClientLimitExceeded    = "ClientLimitExceededException"
	codeInternalFailure        = "InternalFailure"
	msgStreamNotFound          = "The requested stream is not found or not active."
	msgResourceNotFoundGeneric = "The requested resource is not found."
	msgVersionMismatch         = "The version of the stream does not match CurrentVersion."
)

// statusByCode is the HTTP status of each modeled KVS error type (kvs-api.md §1.5). Codes not in
// it get 400.
var statusByCode = map[string]int{
	"InvalidArgumentException":              http.StatusBadRequest,
	"ClientLimitExceededException":          http.StatusBadRequest,
	"ResourceNotFoundException":             http.StatusNotFound,
	"ResourceInUseException":                http.StatusBadRequest,
	"VersionMismatchException":              http.StatusBadRequest,
	"NotAuthorizedException":                http.StatusUnauthorized,
	"AccessDeniedException":                 http.StatusUnauthorized,
	"AccountStreamLimitExceededException":   http.StatusBadRequest,
	"DeviceStreamLimitExceededException":    http.StatusBadRequest,
	"InvalidDeviceException":                http.StatusBadRequest,
	"TagsPerResourceExceededLimitException": http.StatusBadRequest,
	"InvalidResourceFormatException":        http.StatusBadRequest,
	"ConnectionLimitExceededException":      http.StatusBadRequest,
	"InvalidEndpointException":              http.StatusBadRequest,
	"NoDataRetentionException":              http.StatusBadRequest,
	"UnsupportedStreamMediaTypeException":   http.StatusBadRequest,
	"MissingCodecPrivateDataException":      http.StatusBadRequest,
	"InvalidCodecPrivateDataException":      http.StatusBadRequest,
	"InvalidMediaFrameException":            http.StatusBadRequest,
	"InternalFailure":                       http.StatusInternalServerError,
}

// APIError is a KVS error as the client sees it: the error type name (x-amzn-ErrorType and the
// body's "__type"), the message, and the HTTP status (0: looked up from Code, default 400).
type APIError struct {
	Code    string
	Message string
	Status  int
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// HTTPStatus returns e.Status, or the modeled status of e.Code.
func (e *APIError) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := statusByCode[e.Code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// apiErrorf returns an *APIError of the given type with a formatted message.
func apiErrorf(code, format string, a ...any) *APIError {
	return &APIError{Code: code, Message: fmt.Sprintf(format, a...)}
}

// invalidArgf is the common case: a request member fails validation.
func invalidArgf(format string, a ...any) *APIError {
	return apiErrorf(codeInvalidArgument, format, a...)
}

// toAPIError maps err to what the client sees. Unknown errors become a 500 InternalFailure whose
// message does not leak internals; ok is false for them so the caller can log the cause.
func toAPIError(err error) (apiErr *APIError, ok bool) {
	var ae *APIError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae, true
	case errors.Is(err, store.ErrStreamNotFound):
		return &APIError{Code: codeResourceNotFound, Message: msgStreamNotFound}, true
	case errors.Is(err, store.ErrStreamExists):
		return &APIError{Code: codeResourceInUse, Message: "The stream already exists."}, true
	case errors.Is(err, store.ErrVersionMismatch):
		// The status and type of versionMismatch's answer; the sentinel does not carry the name.
		return &APIError{Code: codeVersionMismatch, Message: msgVersionMismatch}, true
	case errors.Is(err, store.ErrUnavailable):
		// A cluster's PostgreSQL or object store did not answer (the store logs why): a 503,
		// which SDKs and producers retry.
		return &APIError{Code: codeInternalFailure, Status: http.StatusServiceUnavailable,
			Message: "The cluster's database or object store did not answer; try again."}, true
	case errors.Is(err, store.ErrNotOwner):
		return &APIError{Code: codeInternalFailure, Status: http.StatusServiceUnavailable,
			Message: "The stream's writer moved to another node; try again."}, true
	case errors.As(err, &mbe):
		return invalidArgf("The request body exceeds %d bytes.", mbe.Limit), true
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client went away or the server is shutting down; the answer is rarely read.
		return &APIError{Code: codeClientLimitExceeded, Message: "The request was cancelled.",
			Status: http.StatusServiceUnavailable}, true
	default:
		return &APIError{Code: codeInternalFailure, Message: "The server encountered an internal error."}, false
	}
}

type errorBody struct {
	Type    string `json:"__type"`
	Message string `json:"Message"`
}

// writeError sends err as a KVS error response:
//
//	HTTP/1.1 <status>
//	Content-Type: application/json
//	x-amzn-ErrorType: <Code>
//	{"__type":"<Code>","Message":"<message>"}
//
// (the Go SDK's typed errors read "Message" with a capital M). x-amzn-RequestId was set by
// ServeHTTP. It must be called before anything of the body was written.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae, ok := toAPIError(err)
	if !ok {
		s.log.Error("internal error", "path", r.URL.Path, "request_id", requestID(r), "err", err)
	} else {
		s.log.Debug("request error", "path", r.URL.Path, "request_id", requestID(r), "err", err)
	}
	body, _ := json.Marshal(errorBody{Type: ae.Code, Message: ae.Message}) // strings only: cannot fail
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-amzn-ErrorType", ae.Code)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(ae.HTTPStatus())
	_, _ = w.Write(body)
}
