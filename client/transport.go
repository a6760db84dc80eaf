package client

import (
	"bytes"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
)

// maxBufferedRequestBody bounds the request bodies bufferedBodyClient copies (archived-media
// requests are small JSON documents; GetMediaForFragmentList with 1000 numbers is about 50 KB).
const maxBufferedRequestBody = 1 << 20

// bufferedBodyClient works around a race between smithy-go and net/http that cuts streaming
// responses (GetMediaForFragmentList, GetClip) short with "use of closed network connection":
// smithy-go closes the request body as soon as Do returns the response headers, and when the server
// starts its response before the transport's writer goroutine has finished with the body (it does
// one last read to see EOF), the transport takes the closed body for a short write and closes the
// connection mid-response. Handing the transport a private copy of the (small) body leaves nothing
// for smithy-go's Close to race with. Seen with Go 1.26 and smithy-go v1.28 against kvs server, in
// roughly one request in five under load.
//
// failed, when not nil, is called when a request could not be sent or got no answer (no HTTP
// response at all): the Client then forgets the data endpoint it went to.
type bufferedBodyClient struct {
	next   kinesisvideoarchivedmedia.HTTPClient
	failed func()
}

func (c bufferedBodyClient) Do(r *http.Request) (*http.Response, error) {
	resp, err := c.do(r)
	if err != nil && c.failed != nil && r.Context().Err() == nil {
		c.failed()
	}
	return resp, err
}

func (c bufferedBodyClient) do(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength <= 0 || r.ContentLength > maxBufferedRequestBody {
		return c.next.Do(r)
	}
	b := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, b); err != nil {
		return nil, err
	}
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(b))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return c.next.Do(r2)
}
