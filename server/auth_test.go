package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/aws/smithy-go"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv"
)

func TestParseCredentials(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   string
		want Credentials
		err  string
	}{
		{name: "simple", in: "# keys\nAKID1 secret1\n\n  AKID2\tsecret/2+x  \n", want: Credentials{"AKID1": "secret1", "AKID2": "secret/2+x"}},
		{name: "ini", in: "[default]\naws_access_key_id = AKID1\naws_secret_access_key=secret1\nregion = us-west-2\n; c\n[other]\nAWS_ACCESS_KEY_ID=AKID2\naws_secret_access_key = s2\naws_session_token = x\n",
			want: Credentials{"AKID1": "secret1", "AKID2": "s2"}},
		{name: "same key twice, same secret", in: "A s\nA s\n", want: Credentials{"A": "s"}},
		{name: "simple secret with =", in: "AKID se=cret==\r\n", want: Credentials{"AKID": "se=cret=="}},
		{name: "empty", in: "# nothing\n", err: "no access key"},
		{name: "one field", in: "AKID\n", err: "want ACCESS_KEY_ID SECRET"},
		{name: "three fields", in: "A B C\n", err: "want ACCESS_KEY_ID SECRET"},
		{name: "conflict", in: "A s\nA t\n", err: "different secrets"},
		{name: "ini without secret", in: "[p]\naws_access_key_id = A\n", err: "needs both"},
		{name: "ini bad line", in: "[p]\nA s\n", err: "key = value"},
		{name: "value outside section", in: "aws_access_key_id = A\n", err: "outside a [section]"},
		{name: "bad section", in: "[p\n", err: "malformed section"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCredentials(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

var testCreds = Credentials{"AKIDLOCAL": "secret", "AKIDOTHER": "other-secret"}

func authEnv(t *testing.T, mod ...func(*Config)) *mediaEnv {
	return newMediaEnv(t, "mem", append([]func(*Config){func(c *Config) { c.Credentials = testCreds }}, mod...)...)
}

func sdkClient(e *mediaEnv, id, secret string) *kinesisvideo.Client {
	return kinesisvideo.New(kinesisvideo.Options{
		Region: "eu-west-1", BaseEndpoint: aws.String(e.ts.URL), HTTPClient: e.ts.Client(), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""),
	})
}

// rawAuth posts body to path with no signature, or with the headers of hdr, and returns the
// status, error type and message.
func rawAuth(t *testing.T, e *mediaEnv, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb errorBody
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(b, &eb); err != nil || eb.Type != resp.Header.Get("x-amzn-ErrorType") || eb.Message == "" {
			t.Fatalf("error body %q (%v), header %q", b, err, resp.Header.Get("x-amzn-ErrorType"))
		}
	}
	return resp.StatusCode, eb.Type, eb.Message
}

func signedRequest(t *testing.T, e *mediaEnv, path, body, id, secret string, at time.Time, mod ...func(*http.Request)) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, m := range mod {
		m(req)
	}
	hash := payloadSHA(body)
	if path == "/putMedia" {
		hash = emptyPayloadSHA256
	}
	if err := v4.NewSigner().SignHTTP(t.Context(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, req, hash, "kinesisvideo", "us-west-2", at); err != nil {
		t.Fatal(err)
	}
	return req
}

func payloadSHA(body string) string { return hexSHA([]byte(body)) }

func hexSHA(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestAuthSDKAndRawRequests(t *testing.T) {
	t.Parallel()
	e := authEnv(t)
	ctx := t.Context()
	good := sdkClient(e, "AKIDLOCAL", "secret")
	if _, err := good.CreateStream(ctx, &kinesisvideo.CreateStreamInput{StreamName: aws.String("cam"), DataRetentionInHours: aws.Int32(1)}); err != nil {
		t.Fatalf("signed CreateStream: %v", err)
	}
	if _, err := sdkClient(e, "AKIDOTHER", "other-secret").DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: aws.String("cam")}); err != nil {
		t.Fatalf("second key: %v", err)
	}
	_, err := sdkClient(e, "AKIDLOCAL", "wrong").DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: aws.String("cam")})
	wantAPIError[*types.NotAuthorizedException](t, err)
	_, err = sdkClient(e, "AKIDUNKNOWN", "secret").ListStreams(ctx, &kinesisvideo.ListStreamsInput{})
	var ae smithy.APIError // ListStreams' model names no NotAuthorizedException: a generic API error
	if !errors.As(err, &ae) || ae.ErrorCode() != "NotAuthorizedException" {
		t.Fatalf("ListStreams with an unknown key: %v", err)
	}
	_, err = sdkClient(e, "AKIDLOCAL", "wrong").ListTagsForResource(ctx, &kinesisvideo.ListTagsForResourceInput{ResourceARN: aws.String("arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1")})
	wantAPIError[*types.AccessDeniedException](t, err)

	now := time.Now()
	describe := `{"StreamName":"cam"}`
	cases := []struct {
		name string
		req  *http.Request
		want int
		typ  string
		msg  string
	}{
		{"signed", signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now), 200, "", ""},
		{"signed 14 min ago", signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now.Add(-14*time.Minute)), 200, "", ""},
		{"unsigned", func() *http.Request {
			r, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+"/describeStream", strings.NewReader(describe))
			return r
		}(), 401, "NotAuthorizedException", "Missing Authentication Token"},
		{"unsigned unknown path", func() *http.Request {
			r, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+"/nope", nil)
			return r
		}(), 401, "NotAuthorizedException", "Missing Authentication Token"},
		{"unsigned TagResource", func() *http.Request {
			r, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+"/TagResource", strings.NewReader(`{}`))
			return r
		}(), 401, "AccessDeniedException", "Missing Authentication Token"},
		{"expired", signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now.Add(-16*time.Minute)), 403, "InvalidSignatureException", "Signature expired"},
		{"from the future", signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now.Add(16*time.Minute)), 403, "InvalidSignatureException", "Signature not yet current"},
		{"wrong secret", signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "nope", now), 401, "NotAuthorizedException", "does not match"},
		{"unknown key", signedRequest(t, e, "/describeStream", describe, "AKIDNOBODY", "secret", now), 401, "NotAuthorizedException", "security token"},
		{"body swapped after signing", func() *http.Request {
			r := signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now)
			r.Body = io.NopCloser(strings.NewReader(`{"StreamName":"cax"}`))
			r.Header.Del("X-Amz-Content-Sha256")
			return r
		}(), 401, "NotAuthorizedException", "does not match"},
		{"path changed after signing", func() *http.Request {
			r := signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now)
			r.URL.Path = "/deleteStream"
			return r
		}(), 401, "NotAuthorizedException", "does not match"},
		{"signed header changed", signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now, func(r *http.Request) { r.Header.Set("X-Amz-Target", "a") }), 200, "", ""},
		{"wrong service in scope", func() *http.Request {
			r := signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/kinesisvideo/", "/s3/", 1))
			return r
		}(), 401, "NotAuthorizedException", "Credential must be"},
		{"other algorithm", func() *http.Request {
			r := signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now)
			r.Header.Set("Authorization", "AWS AKIDLOCAL:abc")
			return r
		}(), 401, "NotAuthorizedException", "algorithm"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, typ, msg := rawAuth(t, e, tc.req)
			if status != tc.want || typ != tc.typ || !strings.Contains(msg, tc.msg) {
				t.Fatalf("got %d %s %q, want %d %s %q", status, typ, msg, tc.want, tc.typ, tc.msg)
			}
		})
	}
	// A signed header changed after signing is caught.
	r := signedRequest(t, e, "/describeStream", describe, "AKIDLOCAL", "secret", now, func(r *http.Request) { r.Header.Set("X-Amz-Target", "a") })
	r.Header.Set("X-Amz-Target", "b")
	if status, _, _ := rawAuth(t, e, r); status != 401 {
		t.Fatalf("tampered signed header: %d", status)
	}
}

// The canonical-request path (used for header sets aws-sdk-go-v2 never signs, as the KVS C
// producer's) agrees with the SDK's signer wherever both apply.
func TestCanonicalSigV4MatchesSDK(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ path, query, body string }{
		{"/describeStream", "", `{"StreamName":"cam"}`},
		{"/listStreams", "", ""},
		{"/getMedia", "a=1&b=x%20y&a=0", `{"StreamName":"cam","StartSelector":{"StartSelectorType":"NOW"}}`},
	} {
		u := "http://127.0.0.1:4567" + tc.path
		if tc.query != "" {
			u += "?" + tc.query
		}
		req, _ := http.NewRequestWithContext(t.Context(), "POST", u, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Amz-Meta-X", "  a   b ")
		hash := hexSHA([]byte(tc.body))
		at := time.Date(2024, 1, 17, 11, 10, 36, 0, time.UTC)
		if err := v4.NewSigner().SignHTTP(t.Context(), aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: "s", SessionToken: "tok"}, req, hash, "kinesisvideo", "us-east-1", at); err != nil {
			t.Fatal(err)
		}
		req.Host = req.URL.Host
		sr, err := parseSigV4(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := canonicalSigV4(req, sr, "s", hash); got != sr.signature {
			t.Errorf("%s: canonical %s, SDK %s (signed %s)", tc.path, got, sr.signature, sr.signedRaw)
		}
		if got, ok := sdkSigV4(req, sr, "s", hash); !ok || got != sr.signature {
			t.Errorf("%s: SDK re-sign %s %v, want %s", tc.path, got, ok, sr.signature)
		}
	}
}

// signLikeCProducer signs a PutMedia request as the KVS C producer does: every header but
// Authorization and the security token, user-agent and transfer-encoding included, with the
// empty-payload hash.
func signLikeCProducer(req *http.Request, id, secret string, at time.Time) {
	req.Header.Set("X-Amz-Date", at.UTC().Format(sigV4TimeFormat))
	req.Header.Set("User-Agent", "AWS-SDK-KVS/3.4.1 GCC/9.4.0 Linux/5.15")
	req.Host = req.URL.Host
	req.TransferEncoding = []string{"chunked"}
	names := []string{"host", "transfer-encoding"}
	for k := range req.Header {
		names = append(names, strings.ToLower(k))
	}
	slices.Sort(names)
	sr := &sigV4Request{accessKeyID: id, scopeDate: at.UTC().Format("20060102"), region: "us-west-2", signedHeaders: names,
		signedRaw: strings.Join(names, ";"), amzDate: at.UTC().Format(sigV4TimeFormat)}
	sig := canonicalSigV4(req, sr, secret, emptyPayloadSHA256)
	req.Header.Set("Authorization", sigV4Algorithm+" Credential="+id+"/"+sr.scopeDate+"/us-west-2/kinesisvideo/aws4_request, SignedHeaders="+sr.signedRaw+", Signature="+sig)
}

// PutMedia signed in every accepted way (SDK signer with the empty-payload hash or
// UNSIGNED-PAYLOAD, the C producer's header set, a presigned URL) is answered with acks; forged
// or expired ones get 401 before any ack.
func TestAuthPutMedia(t *testing.T) {
	t.Parallel()
	e := authEnv(t)
	ctx := t.Context()
	if _, err := sdkClient(e, "AKIDLOCAL", "secret").CreateStream(ctx, &kinesisvideo.CreateStreamInput{StreamName: aws.String("cam"), DataRetentionInHours: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	c := loadClip(t, "h264.mkv")
	frag := 0
	body := func() []byte {
		b := append(c.header(), c.cluster(t, frag, baseMillis)...)
		frag++
		return b
	}
	newReq := func(b []byte) *http.Request {
		// Transfer-Encoding chunked as producers stream it: the length is not known.
		req, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+"/putMedia", io.NopCloser(bytes.NewReader(b)))
		req.Header.Set(hdrStreamName, "cam")
		req.Header.Set(hdrTimecodeType, "ABSOLUTE")
		req.Header.Set(hdrProducerStartTime, "1700000000.5")
		req.Header.Set("Content-Type", "application/json")
		return req
	}
	sdkSign := func(hash string, at time.Time, id, secret string) func(*http.Request) {
		return func(req *http.Request) {
			req.Header.Set("X-Amz-Content-Sha256", hash)
			if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, req, hash, "kinesisvideo", "us-west-2", at); err != nil {
				t.Fatal(err)
			}
		}
	}
	presign := func(at time.Time, expires string, secret string) func(*http.Request) {
		return func(req *http.Request) {
			q := req.URL.Query()
			q.Set("X-Amz-Expires", expires)
			req.URL.RawQuery = q.Encode()
			u, _, err := v4.NewSigner().PresignHTTP(ctx, aws.Credentials{AccessKeyID: "AKIDLOCAL", SecretAccessKey: secret}, req, emptyPayloadSHA256, "kinesisvideo", "us-west-2", at)
			if err != nil {
				t.Fatal(err)
			}
			req.URL, _ = req.URL.Parse(u)
		}
	}
	now := time.Now()
	cases := []struct {
		name string
		sign func(*http.Request)
		ok   bool
		msg  string
	}{
		{"SDK empty-payload hash", sdkSign(emptyPayloadSHA256, now, "AKIDLOCAL", "secret"), true, ""},
		{"SDK UNSIGNED-PAYLOAD", sdkSign(unsignedPayload, now, "AKIDLOCAL", "secret"), true, ""},
		{"C producer", func(r *http.Request) { signLikeCProducer(r, "AKIDOTHER", "other-secret", now) }, true, ""},
		{"presigned", presign(now, "300", "secret"), true, ""},
		{"unsigned", func(*http.Request) {}, false, "Missing Authentication Token"},
		{"forged", sdkSign(emptyPayloadSHA256, now, "AKIDLOCAL", "guess"), false, "does not match"},
		{"C producer forged", func(r *http.Request) { signLikeCProducer(r, "AKIDOTHER", "guess", now) }, false, "does not match"},
		{"expired", sdkSign(emptyPayloadSHA256, now.Add(-20*time.Minute), "AKIDLOCAL", "secret"), false, "Signature expired"},
		{"presigned expired", presign(now.Add(-10*time.Minute), "300", "secret"), false, "Signature expired"},
		{"presigned forged", presign(now, "300", "guess"), false, "does not match"},
		{"body hash claimed", sdkSign(hexSHA([]byte("x")), now, "AKIDLOCAL", "secret"), false, "empty-payload hash or UNSIGNED-PAYLOAD"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(body())
			tc.sign(req)
			resp, err := e.ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if !tc.ok {
				status, typ := 401, "NotAuthorizedException"
				if strings.Contains(tc.msg, "Signature expired") { // clock skew: AWS's type, which SDKs correct
					status, typ = 403, "InvalidSignatureException"
				}
				if resp.StatusCode != status || resp.Header.Get("x-amzn-ErrorType") != typ || !strings.Contains(string(b), tc.msg) {
					t.Fatalf("%d %v %s, want %d %s %q", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), b, status, typ, tc.msg)
				}
				return
			}
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"PERSISTED"`) {
				t.Fatalf("%d %s, want PERSISTED", resp.StatusCode, b)
			}
		})
	}
}

// client.Producer and client.Consumer sign with the credentials of the environment: the right
// ones store and read media, the wrong ones get NotAuthorizedException.
func TestAuthClientProducerConsumer(t *testing.T) {
	e := authEnv(t)
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDLOCAL")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	ctx := t.Context()
	cl, err := client.New(ctx, client.Config{Endpoint: e.ts.URL, Region: "us-west-2", HTTPClient: e.ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Control.CreateStream(ctx, &kinesisvideo.CreateStreamInput{StreamName: aws.String("cam"), DataRetentionInHours: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	c := loadClip(t, "h264.mkv")
	p, err := client.NewProducer(cl, client.ProducerConfig{Stream: "cam", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		f := &mkv.Fragment{DocType: c.docType, TimecodeScale: c.scale, Tracks: c.tracks, Timecode: c.fragTimecode(i, baseMillis)}
		for _, fr := range c.frags[i%len(c.frags)] {
			fr.Timecode += baseMillis
			f.Frames = append(f.Frames, fr)
		}
		if err := p.Send(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := client.NewConsumer(cl, client.ConsumerConfig{Stream: "cam", Start: client.StartSelector{Type: client.StartEarliest}, NoFollow: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, err := cons.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	cons.Close()
	if n != 3 {
		t.Fatalf("read %d fragments, want 3", n)
	}

	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	bad, err := client.New(ctx, client.Config{Endpoint: e.ts.URL, Region: "us-west-2", HTTPClient: e.ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	bc, err := client.NewConsumer(bad, client.ConsumerConfig{Stream: "cam", Start: client.StartSelector{Type: client.StartEarliest}, NoFollow: true, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bc.Next(ctx)
	wantAPIError[*types.NotAuthorizedException](t, err) // GetDataEndpoint is refused first
	retention := 1
	bp, err := client.NewProducer(bad, client.ProducerConfig{Stream: "cam", MaxAttempts: 1, RetentionHours: &retention})
	if err != nil {
		t.Fatal(err)
	}
	f := &mkv.Fragment{DocType: c.docType, TimecodeScale: c.scale, Tracks: c.tracks, Timecode: c.fragTimecode(0, baseMillis+1e6), Frames: shift(c.frags[0], baseMillis+1e6)}
	_ = bp.Send(ctx, f)
	if err := bp.Close(ctx); err == nil || !strings.Contains(err.Error(), "NotAuthorized") {
		t.Fatalf("producer with a wrong secret: %v", err)
	}
}

// The real AWS CLI signs with botocore: matching keys work (control plane and archived media), a
// wrong secret is refused with NotAuthorizedException, and so is --no-sign-request.
func TestAuthAWSCLI(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := authEnv(t)
	cli := testutil.NewAWSCLI(t, e.ts.URL)
	run := func(id, secret string, args ...string) (string, int) {
		cli.AccessKey, cli.SecretKey = id, secret
		out, stderr, code := cli.Run(args...)
		return string(out) + stderr, code
	}
	if out, code := run("AKIDLOCAL", "secret", "kinesisvideo", "create-stream", "--stream-name", "cli", "--data-retention-in-hours", "1"); code != 0 {
		t.Fatalf("create-stream: %d %s", code, out)
	}
	// The archived-media client, a wrong secret, an unknown key and an unsigned request.
	if out, code := run("AKIDOTHER", "other-secret", "kinesis-video-archived-media", "list-fragments", "--stream-name", "cli"); code != 0 {
		t.Fatalf("list-fragments: %d %s", code, out)
	}
	for _, bad := range [][]string{
		{"AKIDLOCAL", "wrong", "kinesisvideo", "describe-stream", "--stream-name", "cli"},
		{"AKIDNOBODY", "secret", "--no-sign-request", "kinesisvideo", "describe-stream", "--stream-name", "cli"},
	} {
		if out, code := run(bad[0], bad[1], bad[2:]...); code != 254 || !strings.Contains(out, "NotAuthorizedException") {
			t.Errorf("aws %v: %d %s, want 254 NotAuthorizedException", bad[2:], code, out)
		}
	}
	// A clock 20 minutes ahead of the server's (botocore does not correct it): the message says
	// the signature is not yet current, not that it expired.
	ahead := authEnv(t, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(-20 * time.Minute) } })
	cli = testutil.NewAWSCLI(t, ahead.ts.URL)
	out, code := run("AKIDLOCAL", "secret", "kinesisvideo", "list-streams")
	if code != 254 || !strings.Contains(out, "InvalidSignatureException") || !strings.Contains(out, "Signature not yet current") {
		t.Errorf("aws list-streams from a clock 20 min ahead: %d %s", code, out)
	}
}

// With authentication on, a request body over MaxRequestBody is refused before it is hashed.
func TestAuthBodyLimit(t *testing.T) {
	t.Parallel()
	e := authEnv(t, func(c *Config) { c.MaxRequestBody = 1000 })
	req := signedRequest(t, e, "/describeStream", `{"StreamName":"`+strings.Repeat("a", 2000)+`"}`, "AKIDLOCAL", "secret", time.Now())
	status, typ, msg := rawAuth(t, e, req)
	if status != 400 || typ != codeInvalidArgument || !strings.Contains(msg, "exceeds 1000") {
		t.Fatalf("%d %s %q", status, typ, msg)
	}
}

// skewedDate is a client transport that sees the server's Date header as a server whose clock is
// ahead by skew would send it: with the server's Config.Now ahead by as much, the client's clock
// is skew behind the server's, as a camera's without a real-time clock is.
type skewedDate struct {
	rt   http.RoundTripper
	skew time.Duration
}

func (s skewedDate) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.rt.RoundTrip(r)
	if err == nil {
		if d, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
			resp.Header.Set("Date", d.Add(s.skew).UTC().Format(http.TimeFormat))
		}
	}
	return resp, err
}

// An SDK whose clock is off by more than 15 minutes corrects it from the Date header and retries,
// as against KVS, which answers such a request InvalidSignatureException "Signature expired"
// (aws-sdk-go-v2 treats only that family of codes as clock skew; NotAuthorizedException is final).
func TestAuthClockSkewSDKCorrects(t *testing.T) {
	t.Parallel()
	const skew = time.Hour
	e := authEnv(t, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(skew) } })
	hc := e.ts.Client()
	hc.Transport = skewedDate{rt: hc.Transport, skew: skew}
	kv := kinesisvideo.New(kinesisvideo.Options{
		Region: "eu-west-1", BaseEndpoint: aws.String(e.ts.URL), HTTPClient: hc, RetryMaxAttempts: 3,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDLOCAL", "secret", ""),
	})
	if _, err := kv.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String("skewed")}); err != nil {
		t.Fatalf("CreateStream from a client an hour slow: %v", err)
	}
	// The raw answer is AWS's: 403 InvalidSignatureException.
	r := signedRequest(t, e, "/describeStream", `{"StreamName":"skewed"}`, "AKIDLOCAL", "secret", time.Now())
	if status, typ, msg := rawAuth(t, e, r); status != 403 || typ != "InvalidSignatureException" || !strings.Contains(msg, "Signature expired") {
		t.Fatalf("got %d %s %q, want 403 InvalidSignatureException \"Signature expired\"", status, typ, msg)
	}
}
