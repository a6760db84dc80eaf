package cmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/capture"
)

type listDevicesOptions struct {
	Output string
}

func (o listDevicesOptions) validate() error {
	return validateOutput(o.Output, outputJSON, outputTable)
}

const listDevicesLong = `List the cameras put-media can capture from (--source camera or camera:DEVICE), with the pixel
formats, picture sizes and frame rates each offers. put-media encodes to H.264 and picks the format
nearest to its --width, --height and --fps.

The table (the default) has one row per camera and format; --output json prints an array of
{Device, Name, Formats: [{PixelFormat, Width, Height, FrameRates}], Error}. No camera is not an
error: the table is empty with "no cameras found" on stderr, the JSON is [].

On Linux the cameras are the V4L2 devices /dev/video* found when kvs starts; a camera your user may
not open (not in group video) is listed with the error. Builds without cgo have no camera support
and say so.`

func newListDevicesCmd(env *Env) *cobra.Command {
	run := func(_ context.Context, env *Env, o listDevicesOptions) error {
		return runListDevices(env, o, capture.ListCameras)
	}
	c, o := newCommand(env, run, &cobra.Command{
		Use:   "list-devices [--output table|json]",
		Short: "List the cameras put-media can capture from, with their formats and sizes",
		Long:  listDevicesLong,
	})
	c.Flags().StringVar(&o.Output, "output", outputTable, "output format: table or json")
	return c
}

// cameraOutput is one camera in list-devices' JSON output.
type cameraOutput struct {
	Device  string
	Name    string
	Formats []capture.CameraFormat
	Error   string `json:",omitempty"`
}

// runListDevices prints the cameras list returns.
func runListDevices(env *Env, o listDevicesOptions, list func() ([]capture.CameraInfo, error)) error {
	cams, err := list()
	if err != nil {
		return fmt.Errorf("list-devices: %w", err) // without cgo: capture.ErrCaptureNotBuilt, which says how to get it
	}
	if o.Output == outputJSON {
		out := make([]cameraOutput, 0, len(cams))
		for _, c := range cams {
			co := cameraOutput{Device: c.Device, Name: c.Name, Formats: make([]capture.CameraFormat, 0, len(c.Formats))}
			for _, f := range c.Formats {
				if f.FrameRates == nil {
					f.FrameRates = []float64{} // [] rather than null: "the driver does not tell"
				}
				co.Formats = append(co.Formats, f)
			}
			if c.Err != nil {
				co.Error = c.Err.Error()
			}
			out = append(out, co)
		}
		return writeJSON(env.Stdout, out)
	}
	if len(cams) == 0 {
		fmt.Fprintln(env.Stderr, "no cameras found")
		return nil
	}
	var rows [][]string
	for _, c := range cams {
		if c.Err != nil || len(c.Formats) == 0 {
			rows = append(rows, []string{c.Device, c.Name, "", "", ""})
			continue
		}
		for _, f := range c.Formats {
			rates := make([]string, len(f.FrameRates))
			for i, r := range f.FrameRates {
				rates[i] = strconv.FormatFloat(r, 'f', -1, 64)
			}
			rows = append(rows, []string{c.Device, c.Name, f.PixelFormat, fmt.Sprintf("%dx%d", f.Width, f.Height), strings.Join(rates, ",")})
		}
	}
	if err := writeTable(env.Stdout, []string{"DEVICE", "NAME", "FORMAT", "SIZE", "FPS"}, rows); err != nil {
		return err
	}
	for _, c := range cams {
		if c.Err != nil {
			fmt.Fprintf(env.Stderr, "kvs: %s: %v\n", c.Device, c.Err)
		}
	}
	return nil
}
