package deps

import (
	_ "github.com/Eyevinn/mp4ff/mp4"
	_ "github.com/at-wat/ebml-go"
	_ "github.com/aws/aws-sdk-go-v2/aws"
	_ "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/credentials"
	_ "github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	_ "github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	_ "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	_ "github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	_ "github.com/chromedp/chromedp"
	_ "github.com/pion/mediadevices"
	_ "github.com/pion/mediadevices/pkg/driver/videotest"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/spf13/cobra"
	_ "github.com/spf13/viper"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/term"
)
