package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// signingName is the SigV4 service name of all three KVS APIs (control plane, media, archived media).
const signingName = "kinesisvideo"

// Sign adds an AWS Signature Version 4 for the kinesisvideo service to req, with the Client's
// credentials and region: what AWS and `kvs server --auth sigv4` check. It is what the Client's own
// PutMedia, GetMedia and GetMediaForFragmentList requests go through, exported for requests it
// does not make itself (internal/bench's raw PutMedia and GetMedia). body is the request payload
// when it is known up front: its SHA-256 is signed. Pass nil for a streaming body (PutMedia): it is
// signed with the hash of no bytes, as the KVS producer SDKs do, since the body is not known when
// the headers go out. It signs at the servers' time when their Date headers showed the local clock
// more than 4 minutes off (clock.go). Safe for concurrent use.
func (c *Client) Sign(ctx context.Context, req *http.Request, body []byte) error {
	if c.cfg.Credentials == nil {
		return fmt.Errorf("sign %s: no AWS credentials configured", req.URL.Path)
	}
	creds, err := c.cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("sign %s: credentials: %w", req.URL.Path, err)
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	if err := signer.SignHTTP(ctx, creds, req, hash, signingName, c.cfg.Region, c.now()); err != nil {
		return fmt.Errorf("sign %s: %w", req.URL.Path, err)
	}
	return nil
}
