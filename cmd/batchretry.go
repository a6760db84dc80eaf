package cmd

import (
	"context"
	"errors"
	"io"
	"net/url"
	"syscall"
	"time"

	"github.com/openkvs/kvs/client"
)

// batchAttempts is how often a GetMediaForFragmentList batch is tried when the server answers
// with a retryable error (5xx, throttling) or the answer breaks off, as the SDK's retryer does for
// the other calls.
const batchAttempts = 3

// withRetry retries fetch on a retryable *client.APIError or a broken answer, with a short
// backoff. A batch is only handed on whole, so a retry cannot duplicate or lose fragments.
func withRetry[T any](fetch func(context.Context, []string) (T, error)) func(context.Context, []string) (T, error) {
	return func(ctx context.Context, numbers []string) (T, error) {
		for attempt := 1; ; attempt++ {
			v, err := fetch(ctx, numbers)
			var ae *client.APIError
			if err == nil || attempt == batchAttempts || ctx.Err() != nil || !(errors.As(err, &ae) && ae.Retryable() || brokenAnswer(err)) {
				return v, err
			}
			select {
			case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
			case <-ctx.Done():
				return v, ctx.Err()
			}
		}
	}
}

// brokenAnswer reports whether err is a connection that broke off during a request or its
// answer (a server killed or restarted, a proxy that dropped it), which the same request may get
// through whole. A server that cannot be reached at all is not one (client.failFast).
func brokenAnswer(err error) bool {
	var ue *url.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.As(err, &ue) && errors.Is(ue.Err, io.EOF)
}
