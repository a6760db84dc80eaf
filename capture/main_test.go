package capture

import (
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.WaitingTests(16) // RTSP cameras and the live test pattern send in real time: 16, not 8, took the package from 7.6 to 4.5 s once it had eleven such tests of about 4 s
	m.Run()
}
