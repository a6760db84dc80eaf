package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// signingName is the SigV4 service name of all three KVS APIs (control plane, media, archived media).
const signingName = "kinesisvideo"

// emptyPayloadHash is the SHA-256 of no bytes. Streaming PutMedia requests are signed with it, as
// the KVS C producer does: the body is not known when the headers go out.
const emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// payloadHash returns the hex SHA-256 of b, for requests whose body is known up front.
func payloadHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// sign adds SigV4 headers to req for the kinesisvideo service using the credentials and region of
// cfg. hash is the request payload's hex SHA-256 (emptyPayloadHash for streaming bodies).
func sign(ctx context.Context, cfg aws.Config, req *http.Request, hash string) error {
	if cfg.Credentials == nil {
		return fmt.Errorf("sign %s: no AWS credentials configured", req.URL.Path)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("sign %s: credentials: %w", req.URL.Path, err)
	}
	req.Header.Set("X-Amz-Content-Sha256", hash)
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	if err := signer.SignHTTP(ctx, creds, req, hash, signingName, cfg.Region, time.Now().UTC()); err != nil {
		return fmt.Errorf("sign %s: %w", req.URL.Path, err)
	}
	return nil
}
