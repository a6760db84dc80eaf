package capture

import (
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.WaitingTests(8) // RTSP cameras and the live test pattern send in real time
	m.Run()
}
