package cmd

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/openkvs/kvs/client"
)

// serverCPU returns the CPU seconds the kvs servers at endpoints have used since they started:
// the sum of process_cpu_seconds_total from each one's GET /metrics (signed, in case it runs
// with --auth sigv4). kvs bench reads it before and after a run.
func serverCPU(ctx context.Context, cl *client.Client, endpoints []string) (float64, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	var total float64
	for _, e := range endpoints {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e+"/metrics", nil)
		if err != nil {
			return 0, err
		}
		if err := cl.Sign(ctx, req, nil); err != nil {
			return 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, fmt.Errorf("%s/metrics: %w", e, err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode != http.StatusOK:
			return 0, fmt.Errorf("%s/metrics: %s (a kvs server before metrics, or a proxy in the way?)", e, resp.Status)
		case err != nil:
			return 0, fmt.Errorf("%s/metrics: %w", e, err)
		}
		f := fams["process_cpu_seconds_total"]
		if f == nil || len(f.GetMetric()) == 0 {
			return 0, fmt.Errorf("%s/metrics has no process_cpu_seconds_total (not on this platform?)", e)
		}
		m := f.GetMetric()[0]
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return total, nil
}
