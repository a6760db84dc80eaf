// Command kvs is a local Kinesis Video Streams server and client. See github.com/openkvs/kvs.
package main

import (
	"os"

	"github.com/openkvs/kvs/cmd"
)

func main() { os.Exit(cmd.Main()) }
