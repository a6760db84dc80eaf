package server_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"

	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

// A kvs server in a test, driven by the unmodified AWS SDK: only the endpoint changes.
func Example() {
	st := store.NewMem()
	defer st.Close()
	srv, err := server.New(server.Config{Store: st})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()

	kv := kinesisvideo.New(kinesisvideo.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(ts.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("any", "any", ""),
	})
	ctx := context.Background()
	if _, err := kv.CreateStream(ctx, &kinesisvideo.CreateStreamInput{StreamName: aws.String("camera-1")}); err != nil {
		panic(err)
	}
	out, err := kv.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: aws.String("camera-1")})
	if err != nil {
		panic(err)
	}
	fmt.Println(aws.ToString(out.StreamInfo.StreamName), out.StreamInfo.Status)
	// Output: camera-1 ACTIVE
}
