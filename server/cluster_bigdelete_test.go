package server

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server/cluster"
)

// TestClusterDeleteBigStreamAWSCLI: `aws kinesisvideo delete-stream` of a cluster stream with
// many fragments succeeds, and the name can be used again at once. The store deleted every
// fragment row in DeleteStream's one statement, within UnavailableWait: past a few million rows
// the CLI got InternalFailure on every try (a 503, "did not answer; try again", which SDKs retry
// the same way; a 500 under a statement_timeout), the stream whole. (Shown when this was fixed
// with 300,000 rows against a statement_timeout of 100 ms; cluster.TestDeleteStreamManyRows
// checks that the rows are left to the cleanup's steps. Here: the AWS CLI's view of that path.)
func TestClusterDeleteBigStreamAWSCLI(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	const rows = 20_000
	var index string
	nodes := newCluster(t, 1, func(c *cluster.Config) { index = c.Index }, nil)
	n := nodes[0]
	arn := n.createStream(t, "big", 24)
	conn, err := pgx.Connect(t.Context(), index)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), `INSERT INTO kvs_fragments (stream_id, number, server_ns, producer_ns,
		duration_ns, size, object_id, object_offset, crc)
		SELECT (SELECT id FROM kvs_streams WHERE name = 'big'), i, i * 1000000000, i * 1000000000, 1000000000, 10, 0, 0, 0
		FROM generate_series(1, $1::bigint) AS i`, rows); err != nil {
		t.Fatal(err)
	}
	cli := testutil.NewAWSCLI(t, n.ts.URL)
	cli.OK(nil, "kinesisvideo", "delete-stream", "--stream-arn", arn)
	cli.Fails("ResourceNotFoundException", "kinesisvideo", "describe-stream", "--stream-name", "big")
	cli.OK(nil, "kinesisvideo", "create-stream", "--stream-name", "big", "--data-retention-in-hours", "24")
}
