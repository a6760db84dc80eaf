// Command testcam serves test cameras over RTSP for scripts (scripts/perf-edge.sh): paths
// cam1..camN, each playing a clip in a loop, in real time, with RTCP sender reports. It prints
// one URL per line, then serves until SIGINT or SIGTERM.
//
//	go run ./internal/testcam/cmd/testcam -clip testdata/h264_aac.mkv -n 16 -addr 127.0.0.1:8554
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/openkvs/kvs/internal/testcam"
)

func main() {
	clip := flag.String("clip", "testdata/h264_aac.mkv", "media file each camera plays in a loop (Matroska or MP4, H.264/H.265, AAC)")
	n := flag.Int("n", 1, "number of cameras (paths cam1..camN)")
	addr := flag.String("addr", "127.0.0.1:8554", "RTSP address")
	flag.Parse()
	if err := run(*clip, *n, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "testcam:", err)
		os.Exit(1)
	}
}

func run(clip string, n int, addr string) error {
	cam, err := testcam.Start(testcam.Config{Addr: addr})
	if err != nil {
		return err
	}
	defer cam.Close()
	for i := 1; i <= n; i++ {
		p := fmt.Sprintf("cam%d", i)
		if err := cam.AddPath(p, testcam.PathConfig{Clips: []string{clip}, SenderReports: true}); err != nil {
			return err
		}
		fmt.Println(cam.URL(p))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
