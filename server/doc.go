// Package server serves the Amazon Kinesis Video Streams HTTP APIs from one http.Handler, so that
// the AWS CLI, the AWS SDKs and the KVS producer SDKs work against it with only the endpoint
// changed. The wire reference is kvs-api.md; section numbers below point into it.
//
// # Routing
//
// Every KVS operation is a POST to a fixed, case-sensitive path with a JSON body (§1.1); all paths
// are distinct, so one mux serves the control plane, PutMedia/GetMedia and the archived-media APIs.
// Every route is in one literal table (routes.go), built in New once the parts it serves are
// (media: the data path; playback: HLS, MPEG-DASH and GetClip). An unknown path is 404
// UnknownOperationException, another method than POST is 405; both carry the usual JSON error
// body. Request dispatch never looks at Content-Type: the C producer sends application/json with
// an MKV body (§1.2). The GET routes are the HLS and DASH playback URLs and the web console.
//
// Handlers are plain functions wrapped by an adapter (adapt.go): op for JSON in, JSON out;
// streamOp for streaming answers, whose prepare phase returns either the error or a responder,
// so nothing is written before every error that can still get a status is decided; sessionOp
// for the HLS and DASH GETs, which start from a verified session token. PutMedia, whose request is
// MKV and whose answer is a stream of acks, has its own handler. Shared pieces: decodeJSON (body cap,
// empty body = {}, unknown members ignored, any malformation = 400 InvalidArgumentException),
// writeJSON, writeError, lookupStream (StreamName and/or StreamARN), the Timestamp type
// (epoch-second JSON numbers, §1.3), and the validators in validate.go. Every response, errors
// included, carries x-amzn-RequestId, a random UUID.
//
// # Errors
//
// Handlers return errors to one writeError, which maps them (toAPIError) to an HTTP status,
// x-amzn-ErrorType and the body {"__type":"<Type>","Message":"<text>"} (§1.5; the Go SDK's typed
// errors read "Message"). An *APIError names its type directly; the store's sentinels map to
// theirs: store.ErrStreamNotFound (also for an ARN that names no live stream) becomes 404
// ResourceNotFoundException "The requested stream is not found or not active.",
// store.ErrStreamExists 400 ResourceInUseException, store.ErrVersionMismatch 400
// VersionMismatchException; anything else is a 500 InternalFailure with a fixed message, logged
// with the request id. Client mistakes are never 500s.
//
// # Versions and concurrency
//
// A stream's Version is 20 random alphanumerics, new on CreateStream, UpdateStream and
// UpdateDataRetention. An ARN names a stream by name and creation time in epoch milliseconds: after
// a delete and re-create under the same name, the old ARN is not found. The server holds no lock
// of its own around a check and its write; the store makes each atomic, so that it also holds
// when several servers share a store:
//
//   - updates and tag merges run their checks (ARN, CurrentVersion, tag count) and their change in
//     the fn of the store's UpdateStream;
//   - DeleteStream passes the version its lookup saw to the store's conditional delete. A stream
//     created again under the name meanwhile has a new random version, so an old ARN never
//     deletes it; when the store reports store.ErrVersionMismatch (changed since the lookup) the
//     handler looks again, up to maxDeleteAttempts times, and answers as if the change came first.
//
// store.ErrVersionMismatch that reaches writeError is a 400 VersionMismatchException, like a
// CurrentVersion the handler found different itself (whose message also names the stream).
//
// # Retention
//
// The Server runs the store's EnforceRetention every Config.RetentionInterval (1 min; negative:
// off) as of Config.Now, from New until Close, and logs what it deleted; the store has no schedule
// of its own. UpdateDataRetention with a decrease also runs it before answering. A store's own
// deletions for byte caps (the FS disk quota, the kvs:max-bytes tag) can reach fragments still in
// the live cache: ListFragments, HLS and GetMedia leave a durable cached fragment out when the
// store's first fragment is newer, as if retention had deleted it.
//
// # Choices where kvs-api.md leaves a question open ([?])
//
//   - StreamName and StreamARN both given (§1.2): accepted when the ARN names that same stream,
//     else InvalidArgumentException, decided before the lookup.
//   - New streams are ACTIVE at once; UpdateStream does not pass through UPDATING (§2).
//   - Tagging does not change Version (§3): Version guards the settings the update operations
//     check, and a tag change should not make a concurrent UpdateStream fail.
//   - TagResource / UntagResource / ListTagsForResource accept stream ARNs (§3); other resource
//     types (channel/...) are well-formed but not found. A malformed ARN there is
//     InvalidArgumentException (their model has no InvalidResourceFormatException); in TagStream /
//     UntagStream / ListTagsForStream it is InvalidResourceFormatException.
//   - UpdateDataRetention outside 0–87600 hours after the change is InvalidArgumentException (§3 [I]);
//     a decrease runs the store's retention pass before answering.
//   - ListStreams NextToken is the standard base64 of the last name returned; the last page has no
//     NextToken, and a page that ends exactly at the last stream is the last page.
//   - ListTags* return all tags (at most 50) and never a NextToken; a request NextToken is ignored.
//   - Authentication (§11, §13.8): off by default, so any signature and unsigned requests are
//     accepted. With Config.Credentials (auth.go) every request but the GET routes needs SigV4 from a listed key
//     (header or presigned; PutMedia signed with the empty-payload hash or UNSIGNED-PAYLOAD, its
//     body not covered, as with KVS), within 15 minutes, else 403 InvalidSignatureException
//     "Signature expired" (or "not yet current") as from AWS (the SDKs correct their clock from the Date header and
//     retry); others get 401 NotAuthorizedException,
//     or AccessDeniedException for the *Resource tagging operations (the model's 401, not the
//     403 observed for IAM denials). The GET routes (HLS, DASH) rely on their session token.
//   - Server.Close (shutdown.go) ends live GetMedia responses and drains uploads: the fragment
//     being received may finish within 3 s and is acked PERSISTED, then ERROR 5000; an upload
//     that stops reading early (any ERROR) ends its response and lingers before closing, so the
//     producer reads the ERROR instead of a reset; PutMedia answers carry Connection: close.
//   - An upload's acks end with at most one ERROR (§5.3), its last ack, naming the earliest
//     fragment that failed (a store failure found behind a later fragment's parse error takes
//     its place). Fragments before it get their PERSISTED; those after it get no final ack, not
//     even when they were stored meanwhile: the producer sends everything from the ERROR's
//     fragment again (a stored one then appears twice, as after a lost ack). A PERSISTED for a
//     later fragment ahead of the ERROR would make the C producer's PIC free the failed one.
//   - Concurrent PutMedia on one stream (§13.4, the docs contradict each other): every
//     connection is accepted and their fragments interleave whole, in number order (sequencer.go).
//     A connection silent for 5 s inside its open fragment while another one's fragment waits for
//     it is ended with ERROR 4000 naming that fragment: a producer reconnecting after a network
//     change is not held by its own half-open old connection for the whole PutMediaReadTimeout.
//   - GetDataEndpoint returns Config.AdvertiseURL, else the request's scheme and Host, for every
//     APIName (§4, §12). X-Forwarded-* are not trusted: behind a proxy, set AdvertiseURL.
//   - The default account id is 000000000000, as in other local emulators; the region in ARNs is
//     Config.Region whatever region the client signed for.
//   - Names "." and ".." match the model's StreamName pattern but are rejected, so that a name can
//     never act as a path element; the store only ever sees validated names.
//   - Integer members must be JSON integers: 24.0 for DataRetentionInHours is an
//     InvalidArgumentException, like a string would be.
//   - GetImages (§9): the choices where the model and the API reference are silent or disagree
//     (SamplingInterval bounds and default, page size, WidthPixels alone, NextToken reuse) are
//     listed at parseGetImages (images.go); which picture a sample gets, and the decode pool, at
//     the top of imageplan.go. A page that needs a codec this server cannot decode is
//     UnsupportedStreamMediaTypeException, naming the fix (install ffmpeg).
//
// # Operations (kvs extensions)
//
// The GET routes /healthz, /readyz (Server.Ready: not shutting down, and the store's Ready),
// /metrics and /events are for operators (ops.go). Metrics (metrics.go) go to Config.Registry with
// bounded cardinality: per-stream series only for the ingest counters of the first
// MetricsMaxStreams streams, histograms over all streams. Events (events.go) are published by the
// handlers that cause them (CreateStream, DeleteStream, an upload's start and end, each ERROR ack,
// each PERSISTED ack when a sink asked for those) to the webhooks (webhook.go) and the /events
// subscribers, each through a bounded queue: publishing never blocks, so no sink can slow ingest.
// With Config.Credentials, /metrics and /events need a signature; MetricsHandler and OpsHandler
// serve them for a listener of their own.
//
// # The PutMedia data path
//
// This is the one description of it; other files point here. One upload is three goroutines.
// The parser (putParser, putparser.go) reads the body with mkv.Reader into the fragment's arena,
// which becomes its stored chunk (pooled memory, no allocation per frame): the reader reads its
// input into the arena (ReadAhead), so a SimpleBlock of one frame is there already, as it came;
// other blocks are split into frames and copied there (after Detach). It acks
// BUFFERING at a cluster start and RECEIVED at its end, and completes the chunk, immutable from
// then on. The persister
// (putSession.persist) takes chunks in fragment-number order across all uploads of the stream
// (the sequencer) and, in this order: publishes each to the stream's chunk cache (livecache.go)
// and wakes the stream's live readers through the notifier (notify.go), so live delivery never
// waits for the disk; then writes it to the store with AppendAsync, which returns once the record
// is written and queued for durability (FS: in the segment file, queued for the group commit),
// without waiting for it, so one stream's consecutive fragments share a commit. ackDurable waits
// for each, in order, and sends PERSISTED only once the store says it is durable (FS: fdatasync
// and index commit; at most 8 fragments of an upload are written but not yet durable). The cache holds the chunk bytes themselves (shared,
// reference-counted, written to GetMedia sockets without copying), not only notices; a fragment
// stays in it until it is durable, so a reader that falls behind the cache and reads the store
// never meets a fragment that is written but not yet indexed. The cache of a stream that keeps
// data holds 5 s or 4 MiB; memory per stream in kvs bench (2 Mbit/s, 1 s fragments) is about
// 4 MB.
package server
