package cmd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/openkvs/kvs/client"
)

// Errors as a user reads them. Run prints one line that says what went wrong ("kvs: " and the
// message) and, when there is something to do about it, a second line that says what. What the AWS
// SDK wraps around a failure ("operation error Kinesis Video: ListStreams, exceeded maximum number
// of attempts, 3, https response error StatusCode: 0, RequestID: , request send failed, Post ...")
// is left out of the message; with --log-level debug the whole chain is logged before it.

// hintError attaches what to do about an error; Run prints the hint on a line of its own.
type hintError struct {
	error
	hint string
}

func (e hintError) Unwrap() error { return e.error }

func withHint(err error, hint string) error { return hintError{err, hint} }

// apiError is an error from a server request, with what the command was doing ("describe-stream
// cam"). Its message is short ("describe-stream cam: ResourceNotFoundException: The requested
// stream is not found or not active.", "list-streams: nothing is listening at
// http://127.0.0.1:4567"); the original stays reachable for errors.As, so exitCode still sees the
// error code, and for the debug log.
type apiError struct {
	what string
	err  error
}

func (e *apiError) Error() string { return e.what + ": " + brief(e.err) }

func (e *apiError) Unwrap() error { return e.err }

func wrapAPI(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return &apiError{what: fmt.Sprintf(format, a...), err: err}
}

// brief says what went wrong in err without the SDK's wrappers: a recognised transport failure, a
// KVS error as "Code: Message", else the innermost error of an SDK operation.
func brief(err error) string {
	var pe *client.ProducerError
	if errors.As(err, &pe) {
		// When every fragment failed for the reason the producer stopped, say it once.
		for _, f := range pe.Failed {
			if pe.Err == nil || !errors.Is(f.Err, pe.Err) {
				return err.Error()
			}
		}
		if pe.Err == nil {
			return err.Error()
		}
		s := brief(pe.Err)
		if n := len(pe.Failed); n > 0 {
			s += fmt.Sprintf(" (%d fragment(s) not stored)", n)
		}
		return s
	}
	var ce *client.CredentialsError
	if errors.As(err, &ce) {
		return "cannot get AWS credentials to sign the request with"
	}
	if f, ok := diagnose(err); ok {
		return f.what
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, msg := ae.ErrorCode(), ae.ErrorMessage()
		if msg == "" || msg == code {
			return code
		}
		return code + ": " + msg
	}
	return sdkCause(err)
}

// credentialsHint says what to do when kvs had no credentials to sign a request with (the
// request was not sent), or the server refused them.
func credentialsHint(err error) string {
	var ce *client.CredentialsError
	if errors.As(err, &ce) {
		return "Configure AWS credentials as for the AWS CLI: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile (AWS_PROFILE, ~/.aws/credentials; aws sso login for SSO). --log-level debug shows what the AWS SDK tried."
	}
	// The server refused the key or the signature (kvs server --auth sigv4, or AWS). A clock too
	// far off ("Signature expired", "Signature not yet current") says so itself.
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NotAuthorizedException", "UnrecognizedClientException", "InvalidSignatureException":
			if msg := strings.ToLower(ae.ErrorMessage()); !strings.Contains(msg, "expired") && !strings.Contains(msg, "not yet current") {
				return "Sign with a key the server accepts (kvs server --auth sigv4: one of its --credentials-file): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE. With none set, kvs signs requests to a local endpoint with a placeholder key."
			}
		}
	}
	return ""
}

// sdkCause returns "Operation: cause" for an error of an SDK operation, leaving out the SDK's
// operation, retry, response and send wrappers; other errors are returned as they are.
func sdkCause(err error) string {
	var op *smithy.OperationError
	if !errors.As(err, &op) {
		return err.Error()
	}
	inner := op.Err
	status := ""
	for {
		var next error
		switch e := inner.(type) {
		case *retry.MaxAttemptsError:
			next = e.Err
		case *awshttp.ResponseError:
			status = fmt.Sprintf("HTTP %d: ", e.HTTPStatusCode())
			next = e.Err
		case *smithyhttp.ResponseError:
			status = fmt.Sprintf("HTTP %d: ", e.HTTPStatusCode())
			next = e.Err
		case *smithyhttp.RequestSendError:
			next = e.Err
		}
		if next == nil {
			break
		}
		inner = next
	}
	return op.OperationName + ": " + status + inner.Error()
}

// failureKind is a class of failure that diagnose recognises.
type failureKind int

const (
	failRefused        failureKind = iota + 1 // nothing listens at the address
	failSchemeMismatch                        // plain HTTP at an https:// URL
	failTLSUntrusted                          // certificate from an unknown authority
	failTLSHost                               // certificate for another host
	failTLS                                   // another TLS failure
	failUnknownHost                           // the host name does not resolve
	failTimeout                               // no answer in time
	failNoAnswer                              // the connection closed without an HTTP answer
	failNotKVS                                // an HTTP answer that is not from KVS
)

// failure is a recognised failure to talk to a server.
type failure struct {
	kind   failureKind
	addr   string // scheme://host[:port] that failed; "" when unknown
	status int    // failNotKVS: the HTTP status
	what   string // what went wrong, for the message
}

// diagnose recognises the failures to reach a server, or to get a KVS answer from it, whose SDK
// text says little to a user.
func diagnose(err error) (failure, bool) {
	f := failure{addr: failedAddr(err)}
	at := f.addr
	if at == "" {
		at = "the endpoint"
	}
	var cert *tls.CertificateVerificationError
	var dns *net.DNSError
	var netErr net.Error
	var urlErr *url.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		f.kind, f.what = failRefused, "nothing is listening at "+at
	case errors.Is(err, http.ErrSchemeMismatch):
		f.kind, f.what = failSchemeMismatch, at+" answers plain HTTP, not HTTPS"
	case errors.As(err, &cert):
		var unknown x509.UnknownAuthorityError
		var host x509.HostnameError
		switch {
		case errors.As(cert.Err, &unknown):
			f.kind, f.what = failTLSUntrusted, "the TLS certificate of "+at+" is not trusted: it is signed by an unknown authority"
		case errors.As(cert.Err, &host):
			f.kind, f.what = failTLSHost, "the TLS certificate of "+at+" does not name that host: "+strings.TrimPrefix(host.Error(), "x509: ")
		default:
			f.kind, f.what = failTLS, "the TLS certificate of "+at+" does not verify: "+strings.TrimPrefix(cert.Err.Error(), "x509: ")
		}
	case errors.As(err, &dns) && dns.IsNotFound:
		f.kind, f.what = failUnknownHost, "cannot resolve host "+dns.Name+" of "+at+" (no such host)"
	case errors.As(err, &netErr) && netErr.Timeout():
		f.kind, f.what = failTimeout, "no answer from "+at+" in time"
	case errors.As(err, &urlErr) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)):
		f.kind, f.what = failNoAnswer, at+" closed the connection without an HTTP answer"
	default:
		op, status, ok := notKVSAnswer(err)
		if !ok {
			return f, false
		}
		f.kind, f.status = failNotKVS, status
		f.what = fmt.Sprintf("%s answered %s with HTTP %d %s, which is not a Kinesis Video Streams answer", at, op, status, http.StatusText(status))
	}
	return f, true
}

// notKVSAnswer recognises an HTTP answer that carries no KVS error: a body the SDK cannot decode,
// an error with no type (the SDK's "UnknownError"), or a media API answer without one. It returns
// the operation and the HTTP status.
func notKVSAnswer(err error) (op string, status int, ok bool) {
	var own *client.APIError
	if errors.As(err, &own) {
		return own.Op, own.Status, own.NotKVS()
	}
	var resp interface{ HTTPStatusCode() int }
	if !errors.As(err, &resp) || resp.HTTPStatusCode() == 0 {
		return "", 0, false
	}
	var de *smithy.DeserializationError
	var ge *smithy.GenericAPIError
	if !errors.As(err, &de) && !(errors.As(err, &ge) && ge.Code == "UnknownError") {
		return "", 0, false
	}
	op = "the request"
	var oe *smithy.OperationError
	if errors.As(err, &oe) {
		op = oe.OperationName
	}
	return op, resp.HTTPStatusCode(), true
}

// failedAddr returns scheme://host[:port] of the request err is about, when it says.
func failedAddr(err error) string {
	var u *url.URL
	var urlErr *url.Error
	var resp *smithyhttp.ResponseError
	var own *client.APIError
	switch {
	case errors.As(err, &own):
		return own.Endpoint
	case errors.As(err, &urlErr):
		u, _ = url.Parse(urlErr.URL)
	case errors.As(err, &resp) && resp.Response != nil && resp.Response.Request != nil:
		u = resp.Response.Request.URL
	}
	if u == nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// hint says what to do about f. endpoint is the configured --endpoint: a failure elsewhere is at
// a data endpoint that the server gave out (GetDataEndpoint), which its --advertise-url decides.
func (f failure) hint(endpoint string) string {
	elsewhere := f.addr != "" && endpoint != "" && !sameOrigin(f.addr, endpoint)
	if elsewhere && f.kind != failTLSUntrusted {
		return fmt.Sprintf("%s is the data endpoint that the server at %s gave out (GetDataEndpoint): check that server's --advertise-url.", f.addr, endpoint)
	}
	switch f.kind {
	case failRefused:
		return "Start `kvs server`, or point --endpoint (KVS_ENDPOINT) at a running server."
	case failSchemeMismatch:
		return "Use an http:// URL in --endpoint (KVS_ENDPOINT)."
	case failTLSUntrusted:
		return "Set AWS_CA_BUNDLE to a PEM file with the server's certificate (kvs server --tls-cert) or the CA that signed it."
	case failTLSHost:
		return "Use a host name the certificate names in --endpoint (KVS_ENDPOINT)."
	case failUnknownHost:
		return "Check the host name in --endpoint (KVS_ENDPOINT)."
	case failTimeout:
		return "Check that --endpoint (KVS_ENDPOINT) is the server's address and reachable from here."
	case failNoAnswer:
		return "Check --endpoint (KVS_ENDPOINT): is a kvs server listening there, and does it serve http or https?"
	case failNotKVS:
		h := "Check --endpoint (KVS_ENDPOINT): it should be the URL `kvs server` prints, e.g. http://127.0.0.1:4567."
		if f.status == http.StatusBadRequest && strings.HasPrefix(f.addr, "http://") {
			// What an HTTPS server answers to plain HTTP.
			h = "If the server serves HTTPS (kvs server --tls-cert), use an https:// URL in --endpoint (KVS_ENDPOINT); else check that it is the URL `kvs server` prints."
		}
		return h
	}
	return ""
}

// sameOrigin reports whether two URLs have the same scheme, host and port.
func sameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return false
	}
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if u.Scheme == "https" {
			return "443"
		}
		return "80"
	}
	return ua.Scheme == ub.Scheme && strings.EqualFold(ua.Hostname(), ub.Hostname()) && port(ua) == port(ub)
}

// usageMessage renders a usage error: cobra's and pflag's errors in kvs's words, and the hint
// (by default, where the help is).
func usageMessage(c *cobra.Command, err error) (msg, hint string) {
	msg = err.Error()
	path := "kvs"
	if c != nil {
		path = c.CommandPath()
	}
	hint = fmt.Sprintf("Run '%s --help' for usage.", path)
	var he hintError
	if errors.As(err, &he) {
		hint = he.hint
	}
	var iv *pflag.InvalidValueError
	if errors.As(err, &iv) && iv.GetFlag() != nil {
		want := ""
		switch t := iv.GetFlag().Value.Type(); {
		case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
			want = "a whole number"
		case strings.HasPrefix(t, "float"):
			want = "a number"
		case t == "duration":
			want = "a duration such as 2s, 500ms or 1m30s"
		case t == "bool":
			want = "true or false"
		}
		if want != "" {
			msg = fmt.Sprintf("--%s %q: want %s", iv.GetFlag().Name, iv.GetValue(), want)
		}
	}
	// cobra: `unknown command "x" for "kvs"`, then "\n\nDid you mean this?\n\tname\n" when it has
	// suggestions.
	if first, suggestions, ok := strings.Cut(msg, "\n\nDid you mean this?\n"); ok {
		msg = first
		var names []string
		for _, s := range strings.Fields(suggestions) {
			names = append(names, "'"+path+" "+s+"'")
		}
		if len(names) > 0 {
			hint = fmt.Sprintf("Did you mean %s? Run '%s --help' for the commands.", strings.Join(names, " or "), path)
		}
	}
	return strings.TrimSpace(msg), hint
}

// noArgs is cobra.NoArgs with a message that says what to do with the argument.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	err := usageErrorf("unexpected argument %q: %s takes flags only", args[0], c.CommandPath())
	if c.Flags().Lookup("stream-name") != nil {
		return withHint(err, fmt.Sprintf("Did you mean --stream-name %s? Run '%s --help' for usage.", args[0], c.CommandPath()))
	}
	return err
}

// checkOutputFile reports, before anything is fetched, an output file that cannot be created
// because its directory does not exist or it is a directory. "" and "-" are stdout.
func checkOutputFile(flag, path string) error {
	if path == "" || path == "-" {
		return nil
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return usageErrorf("%s %s is a directory: give a file name", flag, path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return withHint(usageErrorf("%s %s: directory %s does not exist", flag, path, dir),
			fmt.Sprintf("Create it first (mkdir -p %s), or write the file elsewhere.", dir))
	case err != nil:
		return usageErrorf("%s %s: %v", flag, path, pathErr(err))
	case !fi.IsDir():
		return usageErrorf("%s %s: %s is not a directory", flag, path, dir)
	}
	return nil
}

// checkOutputDir reports a directory that cannot be made because it, or the nearest of its
// parents that exists, is not a directory.
func checkOutputDir(flag, dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		switch {
		case err == nil && fi.IsDir():
			return nil
		case err == nil:
			return usageErrorf("%s %s: %s is not a directory", flag, dir, d)
		case !errors.Is(err, fs.ErrNotExist):
			return usageErrorf("%s %s: %v", flag, dir, pathErr(err))
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// pathErr drops the operation and path from a *fs.PathError, for messages that name the path
// themselves ("--source x.mkv: permission denied", not "...: open x.mkv: permission denied").
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
