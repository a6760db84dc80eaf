package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Cluster is what a server node needs to know of the cluster it is part of (Config.Cluster; nil
// for a single node). The store shared by the nodes implements it (server/cluster): one writer
// per stream, under a lease, and commit notices from every node. See docs/cluster.md and
// cluster.go's handlers for how the server uses it:
//   - PutMedia: Acquire before the 200; an upload for a stream another node writes is relayed
//     there (relay.go), so that the stream keeps one writer.
//   - GetMedia: a node that does not write a stream feeds its live cache from the node that does
//     (one internal tail per stream, shared by its readers), or from the store when no node
//     writes it (feeder.go).
//   - GetDataEndpoint: the URL of the node that writes the stream.
type Cluster interface {
	// Acquire makes this node the writer of stream for an upload and returns "", or returns the
	// URL of the node that writes it. Each "" is paired with one Release after the upload.
	Acquire(ctx context.Context, stream string) (owner string, err error)
	// Release ends an upload Acquire allowed.
	Release(stream string)
	// Owner returns the URL of the node that writes stream ("" when none does) and whether it
	// is this node.
	Owner(ctx context.Context, stream string) (url string, self bool, err error)
	// Owners is Owner for many streams in one call: each one's writer's URL, "" (or no entry)
	// for none.
	Owners(ctx context.Context, streams []string) (map[string]string, error)
	// Watch calls fn(stream, last) after each commit anywhere in the cluster, with the newest
	// committed fragment number of stream; after notices may have been lost, once with ("", 0).
	// fn must not block. stop ends the watch.
	Watch(fn func(stream string, last uint64)) (stop func())
	// Members lists the nodes of the cluster and the streams each writes.
	Members(ctx context.Context) ([]ClusterNode, error)
}

// ClusterNode is one node of a cluster.
type ClusterNode struct {
	ID        string    `json:"Id"`
	URL       string    `json:"Url"`
	Started   time.Time `json:"Started"`
	Heartbeat time.Time `json:"Heartbeat"`
	Streams   []string  `json:"Streams"` // the streams it writes
	Self      bool      `json:"Self"`
}

// hdrRelayedBy marks a request one node relays to another (the value is the relaying node's
// URL). A node never relays such a request again: if it does not write the stream either (the
// lease moved meanwhile), the client gets an error and tries again.
const hdrRelayedBy = "x-kvs-relayed-by"

// dataEndpointOf is GetDataEndpoint's answer: on a cluster, the node that writes the stream,
// else (nobody does, or on a single node) this node.
func (s *Server) dataEndpointOf(ctx context.Context, stream string) (string, error) {
	if s.cfg.Cluster == nil {
		return endpointOf(ctx), nil
	}
	url, _, err := s.cfg.Cluster.Owner(ctx, stream)
	if err != nil {
		return "", err
	}
	if url == "" {
		return endpointOf(ctx), nil
	}
	return url, nil
}

type clusterResponse struct {
	Nodes []ClusterNode `json:"Nodes"`
}

// describeCluster answers POST /kvs/describeCluster (a kvs extension, for the console and
// scripts): the nodes and the streams each writes; one node, this one, when not clustered.
func (s *Server) describeCluster(ctx context.Context, _ *empty) (clusterResponse, error) {
	if s.cfg.Cluster == nil {
		return clusterResponse{Nodes: []ClusterNode{{URL: endpointOf(ctx), Self: true, Streams: []string{}}}}, nil
	}
	nodes, err := s.cfg.Cluster.Members(ctx)
	if err != nil {
		return clusterResponse{}, err
	}
	for i := range nodes {
		if nodes[i].Streams == nil {
			nodes[i].Streams = []string{}
		}
	}
	return clusterResponse{Nodes: nodes}, nil
}

// signRelay sets the body of a request this node makes to another and signs it (a relayed PutMedia, an internal tail)
// with the first of Config.Credentials, when authentication is on: the other node checks it as
// it checks any client's. A PutMedia body is not covered (UNSIGNED-PAYLOAD, as producers do);
// other bodies are.
func (s *Server) signRelay(ctx context.Context, req *http.Request, body []byte) error {
	if body != nil {
		req.Body = readCloser{bytes.NewReader(body)}
		req.ContentLength = int64(len(body))
	}
	if len(s.cfg.Credentials) == 0 {
		return nil
	}
	keys := make([]string, 0, len(s.cfg.Credentials))
	for k := range s.cfg.Credentials {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	hash := "UNSIGNED-PAYLOAD"
	if body != nil {
		sum := sha256.Sum256(body)
		hash = hex.EncodeToString(sum[:])
	}
	req.Header.Set("X-Amz-Content-Sha256", hash)
	creds := aws.Credentials{AccessKeyID: keys[0], SecretAccessKey: s.cfg.Credentials[keys[0]]}
	return v4.NewSigner().SignHTTP(ctx, creds, req, hash, "kinesisvideo", s.cfg.Region, s.cfg.Now())
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
