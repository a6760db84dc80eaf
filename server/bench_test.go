package server

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"

	"github.com/openkvs/kvs/server/store"
)

// BenchmarkDescribeStream measures DescribeStream round trips over loopback TCP against a real
// http.Server with a Mem store: through the AWS SDK (signing, retries middleware, JSON) and as
// raw HTTP (the server's own cost plus net/http). Run:
//
//	go test -run '^$' -bench DescribeStream -benchtime 3s ./server/
func BenchmarkDescribeStream(b *testing.B) {
	st := store.NewMem()
	defer st.Close()
	srv, err := New(Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	defer hs.Close()
	url := "http://" + ln.Addr().String()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	kv := newSDKClient(url, hc)
	if _, err := kv.CreateStream(b.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String("bench"),
		MediaType: aws.String("video/h264"), DataRetentionInHours: aws.Int32(24), Tags: map[string]string{"a": "b"}}); err != nil {
		b.Fatal(err)
	}
	reqPerSec := func(b *testing.B) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}

	b.Run("sdk", func(b *testing.B) {
		in := &kinesisvideo.DescribeStreamInput{StreamName: aws.String("bench")}
		for b.Loop() {
			if _, err := kv.DescribeStream(b.Context(), in); err != nil {
				b.Fatal(err)
			}
		}
		reqPerSec(b)
	})
	b.Run("sdk-parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			in := &kinesisvideo.DescribeStreamInput{StreamName: aws.String("bench")}
			for pb.Next() {
				if _, err := kv.DescribeStream(b.Context(), in); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reqPerSec(b)
	})
	body := []byte(`{"StreamName":"bench"}`)
	raw := func() error {
		req, err := http.NewRequestWithContext(b.Context(), http.MethodPost, url+"/describeStream", bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Errorf("status %d", resp.StatusCode)
		}
		return err
	}
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			if err := raw(); err != nil {
				b.Fatal(err)
			}
		}
		reqPerSec(b)
	})
	b.Run("raw-parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := raw(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reqPerSec(b)
	})
}
