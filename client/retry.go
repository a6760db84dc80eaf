package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// unreachable reports whether err says that the endpoint cannot be reached at all, in a way that
// retrying within one call does not fix: nothing listens at the address (connection refused), the
// server's TLS certificate does not verify, the server speaks plain HTTP to an https:// URL, or the
// host name does not exist. These are a wrong endpoint or a server that is not running; retrying
// them with backoff only delays the error that says so.
func unreachable(err error) bool {
	var cert *tls.CertificateVerificationError
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, http.ErrSchemeMismatch), errors.As(err, &cert):
		return true
	case errors.As(err, &dns):
		return dns.IsNotFound
	}
	return false
}

// failFast wraps the retryer of an SDK client so that errors unreachable reports end the operation
// at the first attempt. The SDK's standard retryer retries every request that could not be sent
// (3 attempts with backoff), connection refused included, on the ground that a service may be
// starting; for kvs that turned "nothing is listening" into three attempts and a chain of SDK
// wrappers. Everything else is decided by r.
func failFast(r aws.Retryer) aws.Retryer {
	if r == nil {
		return nil
	}
	v2, ok := r.(aws.RetryerV2)
	if !ok {
		v2 = retryerV2{r}
	}
	return failFastRetryer{v2}
}

type failFastRetryer struct{ aws.RetryerV2 }

func (r failFastRetryer) IsErrorRetryable(err error) bool {
	return !unreachable(err) && r.RetryerV2.IsErrorRetryable(err)
}

// retryerV2 adapts a Retryer that predates RetryerV2, as the SDK does internally.
type retryerV2 struct{ aws.Retryer }

func (r retryerV2) GetAttemptToken(context.Context) (func(error) error, error) {
	return r.GetInitialToken(), nil
}
