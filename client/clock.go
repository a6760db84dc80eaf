package client

import (
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Clock skew. SigV4 signatures carry their time, and AWS (as kvs server --auth sigv4) refuses one
// more than 15 minutes off its own clock with 403 InvalidSignatureException. The SDK's clients
// correct their signing clock from the Date header of such an answer and retry; the requests the
// Client makes itself (PutMedia, GetMedia, GetMediaForFragmentList) do the same here: every answer's
// Date sets the offset Sign adds to the local clock, and an answer that refused a signature whose
// time was that far from the Date is retryable (APIError.Retryable). A camera without a real-time
// clock, or with a wrong one, then still uploads.

// skewThreshold is how far a server's Date may be from the local clock before requests are signed
// at the server's time: aws-sdk-go-v2's threshold (clock skew correction); Date has 1 s resolution.
const skewThreshold = 4 * time.Minute

// clockSkewCodes are the error types that may mean a signature's time was too far off, as
// aws-sdk-go-v2 lists them; they count as clock skew only when the Date header says so.
var clockSkewCodes = map[string]bool{
	"InvalidSignatureException": true, "SignatureDoesNotMatch": true, "AuthFailure": true,
	"RequestTimeTooSkewed": true, "RequestExpired": true, "RequestInTheFuture": true,
}

// observeDate sets the Client's signing offset from the Date of resp: how far the server's clock
// is ahead of the local one, or 0 when that is under skewThreshold either way.
func (c *Client) observeDate(resp *http.Response) {
	d, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return
	}
	skew := time.Until(d)
	if skew.Abs() < skewThreshold {
		skew = 0
	}
	c.skew.Store(int64(skew))
}

// now is the time Sign signs with: the local clock plus the offset the servers' Date headers set.
func (c *Client) now() time.Time {
	return time.Now().Add(time.Duration(c.skew.Load())).UTC()
}

// signedTooFarOff reports whether resp (an error answer of type code) refused a signature made more
// than skewThreshold away from the server's Date: a retry, signed at the corrected time, may pass.
func signedTooFarOff(code string, resp *http.Response) bool {
	if !clockSkewCodes[code] || resp.Request == nil {
		return false
	}
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return false
	}
	signed, err := time.Parse("20060102T150405Z", resp.Request.Header.Get("X-Amz-Date"))
	if err != nil {
		return false
	}
	return date.Sub(signed).Abs() > skewThreshold
}

// dateClient is the HTTP client of a Client and of its SDK clients: the configured one, noting the
// Date of every answer (observeDate).
type dateClient struct {
	aws.HTTPClient
	c *Client
}

func (d dateClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.HTTPClient.Do(req)
	if err == nil {
		d.c.observeDate(resp)
	}
	return resp, err
}
