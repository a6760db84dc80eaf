package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Credentials maps access key ids to secret access keys. With Config.Credentials set, every
// request must carry an AWS Signature Version 4 made with one of them (see verifySigV4).
type Credentials map[string]string

// ParseCredentials reads a credentials file in either of two forms, detected per line:
//
//	# simple: one key per line, access key id and secret separated by blanks
//	AKIAEXAMPLEKEY1 wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
//
//	# AWS shared-credentials style: any number of [profile] sections
//	[default]
//	aws_access_key_id = AKIAEXAMPLEKEY2
//	aws_secret_access_key = je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY
//
// Blank lines and lines starting with # or ; are ignored; other keys in a section
// (aws_session_token, region, ...) too. A section with only one of the two keys, a malformed line,
// an access key id listed twice with different secrets, or no key at all is an error.
func ParseCredentials(r io.Reader) (Credentials, error) {
	creds := Credentials{}
	add := func(line int, id, secret string) error {
		if id == "" || secret == "" {
			return fmt.Errorf("credentials line %d: empty access key id or secret", line)
		}
		if old, ok := creds[id]; ok && old != secret {
			return fmt.Errorf("credentials line %d: access key id %s listed twice with different secrets", line, id)
		}
		creds[id] = secret
		return nil
	}
	var section string
	var id, secret string
	sectionLine := 0
	endSection := func() error {
		if id == "" && secret == "" {
			return nil
		}
		if id == "" || secret == "" {
			return fmt.Errorf("credentials line %d: section [%s] needs both aws_access_key_id and aws_secret_access_key", sectionLine, section)
		}
		err := add(sectionLine, id, secret)
		id, secret = "", ""
		return err
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	inINI := false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("credentials line %d: malformed section header", n)
			}
			if err := endSection(); err != nil {
				return nil, err
			}
			inINI, section, sectionLine = true, strings.TrimSpace(line[1:len(line)-1]), n
		case inINI && strings.Contains(line, "="):
			k, v, _ := strings.Cut(line, "=")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "aws_access_key_id":
				id = strings.TrimSpace(v)
			case "aws_secret_access_key":
				secret = strings.TrimSpace(v)
			}
		default:
			if inINI {
				return nil, fmt.Errorf("credentials line %d: want key = value inside [%s]", n, section)
			}
			f := strings.Fields(line)
			if len(f) != 2 {
				if strings.Contains(line, "=") {
					return nil, fmt.Errorf("credentials line %d: key = value outside a [section]", n)
				}
				return nil, fmt.Errorf("credentials line %d: want ACCESS_KEY_ID SECRET", n)
			}
			if err := add(n, f[0], f[1]); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if err := endSection(); err != nil {
		return nil, err
	}
	if len(creds) == 0 {
		return nil, errors.New("credentials: no access key found")
	}
	return creds, nil
}

// SigV4 constants (kvs-api.md §11).
const (
	sigV4Algorithm  = "AWS4-HMAC-SHA256"
	sigV4Service    = "kinesisvideo"
	sigV4TimeFormat = "20060102T150405Z"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	// MaxClockSkew is how far X-Amz-Date may be from the server's clock (AWS: 15 minutes).
	MaxClockSkew = 15 * time.Minute
	// maxPresignExpires is the longest X-Amz-Expires AWS accepts (7 days).
	maxPresignExpires = 7 * 24 * time.Hour
)

var emptyPayloadSHA256 = hex.EncodeToString(sha256.New().Sum(nil))

// authError is a rejected request: NotAuthorizedException (401), or AccessDeniedException for the
// generic tagging operations, whose model names that type instead.
func authError(r *http.Request, format string, a ...any) *APIError {
	code := "NotAuthorizedException"
	switch r.URL.Path {
	case "/TagResource", "/UntagResource", "/ListTagsForResource":
		code = "AccessDeniedException"
	}
	return &APIError{Code: code, Message: fmt.Sprintf(format, a...), Status: http.StatusUnauthorized}
}

// skewError is a signature made at a time too far from the server's clock: 403
// InvalidSignatureException, as AWS answers it. The SDKs take that type (with the Date header)
// as clock skew, correct their signing clock and retry; NotAuthorizedException would be final.
func skewError(format string, a ...any) *APIError {
	return &APIError{Code: "InvalidSignatureException", Message: fmt.Sprintf(format, a...), Status: http.StatusForbidden}
}

// sigV4Request is what a request claims about its signature, from the Authorization header or
// from the presigned query parameters.
type sigV4Request struct {
	presigned     bool
	accessKeyID   string
	scopeDate     string // yyyymmdd
	region        string
	signedHeaders []string // lower case, sorted as sent
	signedRaw     string   // the SignedHeaders value as sent
	signature     string   // lower-case hex
	date          time.Time
	amzDate       string
	expires       time.Duration // presigned only
}

// authenticate checks r's SigV4 signature against s.cfg.Credentials (see verifySigV4). On
// success it may have replaced r.Body with an equivalent reader (the body was hashed).
//
// ServeHTTP calls it for every request except the GET routes (getRoutes: HLS playlists, DASH
// manifests and their fragments, which players fetch unsigned, as from KVS; their SessionToken,
// random and issued only by the signed GetHLSStreamingSessionURL or GetDASHStreamingSessionURL,
// is their authorization). A GET route that serves data without such a token is readable by
// anyone who reaches the port.
func (s *Server) authenticate(r *http.Request) error {
	return verifySigV4(r, s.cfg.Credentials, s.cfg.Now(), s.cfg.MaxRequestBody)
}

// verifySigV4 verifies r's AWS Signature Version 4 (header or presigned query form) for the
// kinesisvideo service, any region, with the secret of the access key the credential scope names.
//
// The payload hash it checks against: for PutMedia, whose body streams for as long as the upload
// lasts, the X-Amz-Content-Sha256 value when it is the empty-payload hash or UNSIGNED-PAYLOAD,
// else the empty-payload hash (what the KVS C producer signs) — the media itself is not covered by
// the signature, as with KVS. For every other request the body (at most maxBody bytes) is read and
// hashed, and r.Body is replaced by the bytes read; an X-Amz-Content-Sha256 header must match it.
//
// The signature is recomputed with aws-sdk-go-v2's v4 signer over a copy of the request that
// holds exactly the signed headers; when the client signed headers that signer never signs
// (the C producer signs user-agent and transfer-encoding) the canonical request is built from the
// SignedHeaders list directly (canonicalSigV4), with the same HMAC chain.
func verifySigV4(r *http.Request, creds Credentials, now time.Time, maxBody int64) error {
	sr, err := parseSigV4(r)
	if err != nil {
		return err
	}
	secret, ok := creds[sr.accessKeyID]
	if !ok {
		return authError(r, "The security token included in the request is invalid.")
	}
	if sr.presigned {
		if sr.date.After(now.Add(MaxClockSkew)) {
			return skewError("Signature not yet current: %s is still later than %s.", sr.amzDate, now.Add(MaxClockSkew).UTC().Format(sigV4TimeFormat))
		}
		if now.After(sr.date.Add(sr.expires)) {
			return skewError("Signature expired: %s is now earlier than %s.", sr.date.Add(sr.expires).UTC().Format(sigV4TimeFormat), now.UTC().Format(sigV4TimeFormat))
		}
	} else if d := now.Sub(sr.date); d > MaxClockSkew {
		return skewError("Signature expired: %s is now earlier than %s (%s - 15 min.)", sr.amzDate,
			now.Add(-MaxClockSkew).UTC().Format(sigV4TimeFormat), now.UTC().Format(sigV4TimeFormat))
	} else if d < -MaxClockSkew {
		return skewError("Signature not yet current: %s is still later than %s (%s + 15 min.)", sr.amzDate,
			now.Add(MaxClockSkew).UTC().Format(sigV4TimeFormat), now.UTC().Format(sigV4TimeFormat))
	}

	hashes, err := payloadHashes(r, maxBody)
	if err != nil {
		return err
	}
	for _, hash := range hashes {
		for _, sig := range candidateSigV4(r, sr, secret, hash) {
			if subtle.ConstantTimeCompare([]byte(sig), []byte(sr.signature)) == 1 {
				return nil
			}
		}
	}
	return authError(r, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
}

// parseSigV4 extracts the signature claims of r.
func parseSigV4(r *http.Request) (*sigV4Request, error) {
	sr := &sigV4Request{}
	var credential string
	if auth := r.Header.Get("Authorization"); auth != "" {
		alg, rest, _ := strings.Cut(auth, " ")
		if alg != sigV4Algorithm {
			return nil, authError(r, "Authorization header requires the %s algorithm.", sigV4Algorithm)
		}
		for _, part := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch k {
			case "Credential":
				credential = v
			case "SignedHeaders":
				sr.signedRaw = v
			case "Signature":
				sr.signature = v
			}
		}
		sr.amzDate = r.Header.Get("X-Amz-Date")
	} else if q := r.URL.Query(); q.Get("X-Amz-Algorithm") != "" || q.Get("X-Amz-Signature") != "" {
		if q.Get("X-Amz-Algorithm") != sigV4Algorithm {
			return nil, authError(r, "X-Amz-Algorithm must be %s.", sigV4Algorithm)
		}
		sr.presigned = true
		credential, sr.signedRaw, sr.signature, sr.amzDate = q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature"), q.Get("X-Amz-Date")
		exp, err := strconv.ParseInt(q.Get("X-Amz-Expires"), 10, 64)
		if err != nil || exp < 1 || time.Duration(exp)*time.Second > maxPresignExpires {
			return nil, authError(r, "X-Amz-Expires must be a number of seconds from 1 to 604800.")
		}
		sr.expires = time.Duration(exp) * time.Second
	} else {
		return nil, authError(r, "Missing Authentication Token: the request must be signed with AWS Signature Version 4.")
	}
	if credential == "" || sr.signedRaw == "" || sr.signature == "" {
		return nil, authError(r, "The signature must give Credential, SignedHeaders and Signature.")
	}
	scope := strings.Split(credential, "/")
	if len(scope) != 5 || scope[0] == "" || scope[2] == "" || scope[3] != sigV4Service || scope[4] != "aws4_request" {
		return nil, authError(r, "Credential must be ACCESS_KEY_ID/yyyymmdd/region/%s/aws4_request.", sigV4Service)
	}
	sr.accessKeyID, sr.scopeDate, sr.region = scope[0], scope[1], scope[2]
	t, err := time.Parse(sigV4TimeFormat, sr.amzDate)
	if err != nil {
		return nil, authError(r, "X-Amz-Date must be a yyyymmddThhmmssZ time.")
	}
	if sr.scopeDate != sr.amzDate[:8] {
		return nil, authError(r, "The credential scope date %s does not match X-Amz-Date %s.", sr.scopeDate, sr.amzDate)
	}
	sr.date = t
	sr.signedHeaders = strings.Split(sr.signedRaw, ";")
	if !slices.Contains(sr.signedHeaders, "host") {
		return nil, authError(r, "The host header must be signed.")
	}
	for _, h := range sr.signedHeaders {
		if h == "" || h != strings.ToLower(h) {
			return nil, authError(r, "SignedHeaders must be lower-case header names separated by semicolons.")
		}
	}
	return sr, nil
}

// payloadHashes returns the payload hashes a valid signature of r may have been made with.
func payloadHashes(r *http.Request, maxBody int64) ([]string, error) {
	claimed := r.Header.Get("X-Amz-Content-Sha256")
	if r.URL.Path == "/putMedia" {
		switch claimed {
		case emptyPayloadSHA256, unsignedPayload:
			return []string{claimed}, nil
		case "":
			return []string{emptyPayloadSHA256, unsignedPayload}, nil
		default:
			return nil, authError(r, "PutMedia must be signed with the empty-payload hash or UNSIGNED-PAYLOAD.")
		}
	}
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			return nil, invalidArgf("Could not read the request body: %v.", err)
		}
		if int64(len(body)) > maxBody {
			return nil, invalidArgf("The request body exceeds %d bytes.", maxBody)
		}
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	sum := sha256.Sum256(body)
	actual := hex.EncodeToString(sum[:])
	if claimed != "" && claimed != actual {
		return nil, authError(r, "The X-Amz-Content-Sha256 header does not match the request body.")
	}
	return []string{actual}, nil
}

// candidateSigV4 returns the signature r should carry for sr with the given secret and payload
// hash: from aws-sdk-go-v2's signer when it signs the same header set, and from canonicalSigV4,
// which differs from it only where the SDK normalises (a default port in Host, header sets it
// would not sign).
func candidateSigV4(r *http.Request, sr *sigV4Request, secret, hash string) []string {
	var out []string
	if sig, ok := sdkSigV4(r, sr, secret, hash); ok {
		out = append(out, sig)
	}
	return append(out, canonicalSigV4(r, sr, secret, hash))
}

// signedHeaderValues returns the values of header name as the client saw them when it signed:
// net/http moves Host and Transfer-Encoding out of r.Header.
func signedHeaderValues(r *http.Request, name string) []string {
	switch name {
	case "host":
		return []string{r.Host}
	case "transfer-encoding":
		if len(r.TransferEncoding) > 0 {
			return []string{strings.Join(r.TransferEncoding, ",")}
		}
	case "content-length":
		if v := r.Header.Values("Content-Length"); len(v) > 0 {
			return v
		}
		if r.ContentLength >= 0 {
			return []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	}
	return r.Header.Values(name)
}

// sdkSigV4 re-signs a copy of r with aws-sdk-go-v2's signer: the signed headers only, the same
// time, region and session token. ok is false when the signer would sign a different header set.
func sdkSigV4(r *http.Request, sr *sigV4Request, secret, hash string) (string, bool) {
	u := *r.URL
	u.Scheme, u.Host = "http", r.Host
	q := u.Query()
	q.Del("X-Amz-Signature")
	u.RawQuery = q.Encode()
	cp, err := http.NewRequestWithContext(context.Background(), r.Method, u.String(), nil)
	if err != nil {
		return "", false
	}
	cp.Host = r.Host
	cp.ContentLength = 0
	creds := aws.Credentials{AccessKeyID: sr.accessKeyID, SecretAccessKey: secret}
	for _, h := range sr.signedHeaders {
		switch h {
		case "host":
		case "content-length":
			n, err := strconv.ParseInt(strings.Join(signedHeaderValues(r, h), ""), 10, 64)
			if err != nil || n <= 0 {
				return "", false
			}
			cp.ContentLength = n
		case "x-amz-security-token":
			creds.SessionToken = r.Header.Get(h)
		default:
			for _, v := range signedHeaderValues(r, h) {
				cp.Header.Add(h, v)
			}
		}
	}
	if sr.presigned {
		creds.SessionToken = r.URL.Query().Get("X-Amz-Security-Token")
	}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true; o.DisableHeaderHoisting = true })
	if sr.presigned {
		signed, _, err := signer.PresignHTTP(context.Background(), creds, cp, hash, sigV4Service, sr.region, sr.date)
		if err != nil {
			return "", false
		}
		su, err := url.Parse(signed)
		if err != nil || su.Query().Get("X-Amz-SignedHeaders") != sr.signedRaw {
			return "", false
		}
		return su.Query().Get("X-Amz-Signature"), true
	}
	if err := signer.SignHTTP(context.Background(), creds, cp, hash, sigV4Service, sr.region, sr.date); err != nil {
		return "", false
	}
	auth := cp.Header.Get("Authorization")
	if !strings.Contains(auth, "SignedHeaders="+sr.signedRaw+",") {
		return "", false
	}
	_, sig, _ := strings.Cut(auth, "Signature=")
	return sig, true
}

// canonicalSigV4 computes the signature from the canonical request of the SigV4 specification,
// built from exactly the headers sr lists, in its order.
func canonicalSigV4(r *http.Request, sr *sigV4Request, secret, hash string) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	b.WriteString(path + "\n")
	q := r.URL.Query()
	q.Del("X-Amz-Signature")
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var pairs []string
	for _, k := range keys {
		vals := slices.Clone(q[k])
		slices.Sort(vals)
		for _, v := range vals {
			pairs = append(pairs, sigV4Escape(k)+"="+sigV4Escape(v))
		}
	}
	b.WriteString(strings.Join(pairs, "&") + "\n")
	for _, h := range sr.signedHeaders {
		vals := slices.Clone(signedHeaderValues(r, h))
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		b.WriteString(h + ":" + strings.Join(vals, ",") + "\n")
	}
	b.WriteString("\n" + sr.signedRaw + "\n" + hash)
	canon := sha256.Sum256([]byte(b.String()))
	scope := sr.scopeDate + "/" + sr.region + "/" + sigV4Service + "/aws4_request"
	toSign := sigV4Algorithm + "\n" + sr.amzDate + "\n" + scope + "\n" + hex.EncodeToString(canon[:])
	mac := func(key []byte, data string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(data))
		return h.Sum(nil)
	}
	key := mac([]byte("AWS4"+secret), sr.scopeDate)
	key = mac(key, sr.region)
	key = mac(key, sigV4Service)
	key = mac(key, "aws4_request")
	return hex.EncodeToString(mac(key, toSign))
}

// sigV4Escape is SigV4's URI encoding: everything but A-Z a-z 0-9 - _ . ~ is %XX (upper case).
func sigV4Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
