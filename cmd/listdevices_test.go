package cmd

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/openkvs/kvs/capture"
)

func TestListDevicesOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		output string
		ok     bool
	}{
		{name: "table", output: outputTable, ok: true},
		{name: "json", output: outputJSON, ok: true},
		{name: "other", output: "yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := (listDevicesOptions{Output: tc.output}).validate(); (err == nil) != tc.ok {
				t.Errorf("validate: %v", err)
			}
		})
	}
}

var fakeCameras = []capture.CameraInfo{
	{Device: "/dev/video0", Name: "HD Webcam (usb-0000:00:14.0-1)", Formats: []capture.CameraFormat{
		{PixelFormat: "MJPEG", Width: 1280, Height: 720, FrameRates: []float64{30, 15}},
		{PixelFormat: "YUYV", Width: 640, Height: 480, FrameRates: []float64{30}},
		{PixelFormat: "YUYV", Width: 320, Height: 240},
	}},
	{Device: "/dev/video2", Err: errors.New("open: permission denied")},
}

func TestRunListDevices(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		output     string
		cams       []capture.CameraInfo
		err        error
		stdout     string
		stderr     string
		wantErrSub string
	}{
		{
			name: "table", output: outputTable, cams: fakeCameras,
			stdout: "DEVICE       NAME                            FORMAT  SIZE      FPS\n" +
				"/dev/video0  HD Webcam (usb-0000:00:14.0-1)  MJPEG   1280x720  30,15\n" +
				"/dev/video0  HD Webcam (usb-0000:00:14.0-1)  YUYV    640x480   30\n" +
				"/dev/video0  HD Webcam (usb-0000:00:14.0-1)  YUYV    320x240   -\n" +
				"/dev/video2  -                               -       -         -\n",
			stderr: "kvs: /dev/video2: open: permission denied\n",
		},
		{
			name: "json", output: outputJSON, cams: fakeCameras,
			stdout: `[
    {
        "Device": "/dev/video0",
        "Name": "HD Webcam (usb-0000:00:14.0-1)",
        "Formats": [
            {
                "PixelFormat": "MJPEG",
                "Width": 1280,
                "Height": 720,
                "FrameRates": [
                    30,
                    15
                ]
            },
            {
                "PixelFormat": "YUYV",
                "Width": 640,
                "Height": 480,
                "FrameRates": [
                    30
                ]
            },
            {
                "PixelFormat": "YUYV",
                "Width": 320,
                "Height": 240,
                "FrameRates": []
            }
        ]
    },
    {
        "Device": "/dev/video2",
        "Name": "",
        "Formats": [],
        "Error": "open: permission denied"
    }
]
`,
		},
		{name: "empty table", output: outputTable, stderr: "no cameras found\n"},
		{name: "empty json", output: outputJSON, stdout: "[]\n"},
		{name: "not built", output: outputTable, err: fmt.Errorf("list cameras: %w", capture.ErrCaptureNotBuilt), wantErrSub: "capture is not built into this binary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, out, errb := testEnv(t, nil)
			err := runListDevices(env, listDevicesOptions{Output: tc.output}, func() ([]capture.CameraInfo, error) { return tc.cams, tc.err })
			if tc.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSub) || !errors.Is(err, capture.ErrCaptureNotBuilt) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, tc.stdout)
			}
			if errb.String() != tc.stderr {
				t.Errorf("stderr %q, want %q", errb, tc.stderr)
			}
		})
	}
}

// TestListDevicesCommand goes through the command line: flags, exit codes, and the real camera
// lookup (no camera on CI; without cgo, the not-built-in error).
func TestListDevicesCommand(t *testing.T) {
	t.Parallel()
	env, _, errb := testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"list-devices", "--output", "xml"}); code != ExitUsage {
		t.Errorf("--output xml: exit %d, want %d", code, ExitUsage)
	}
	// text is the AWS CLI's format of the stream verbs; list-devices has none: taken, it printed
	// the table to a script that asked for tab-separated fields.
	env, _, errb = testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"list-devices", "--output", "text"}); code != ExitUsage || !strings.Contains(errb.String(), "want json or table") {
		t.Errorf("--output text: exit %d, stderr %q; want %d, want json or table", code, errb, ExitUsage)
	}
	if built, _ := capture.CaptureBuilt(); !built {
		env, _, errb = testEnv(t, nil)
		if code := Run(t.Context(), env, []string{"list-devices"}); code != ExitError || !strings.Contains(errb.String(), "not built into this binary") {
			t.Errorf("without capture: exit %d, stderr %q", code, errb)
		}
		return
	}
	cams, err := capture.ListCameras()
	if err != nil {
		t.Fatal(err)
	}
	env, out, errb := testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"list-devices", "--output", "json"}); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb)
	}
	if len(cams) == 0 && out.String() != "[]\n" {
		t.Errorf("no cameras: stdout %q, want []", out)
	}
	env, out, errb = testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"list-devices"}); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb)
	}
	if len(cams) == 0 && (out.Len() != 0 || errb.String() != "no cameras found\n") {
		t.Errorf("no cameras: stdout %q, stderr %q", out, errb)
	}
}
