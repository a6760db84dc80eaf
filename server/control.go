package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// streamInfo is the StreamInfo shape of DescribeStream and ListStreams. Unset optional members are
// left out (never null); DataRetentionInHours is always sent because 0 is meaningful.
type streamInfo struct {
	DeviceName           string    `json:"DeviceName,omitempty"`
	StreamName           string    `json:"StreamName"`
	StreamARN            string    `json:"StreamARN"`
	MediaType            string    `json:"MediaType,omitempty"`
	KmsKeyID             string    `json:"KmsKeyId,omitempty"`
	Version              string    `json:"Version"`
	Status               string    `json:"Status"`
	CreationTime         Timestamp `json:"CreationTime"`
	DataRetentionInHours int       `json:"DataRetentionInHours"`
}

func toStreamInfo(st store.Stream) streamInfo {
	status := st.Status
	if status == "" {
		status = "ACTIVE"
	}
	return streamInfo{
		DeviceName:           st.DeviceName,
		StreamName:           st.Name,
		StreamARN:            st.ARN,
		MediaType:            st.MediaType,
		KmsKeyID:             st.KmsKeyID,
		Version:              st.Version,
		Status:               status,
		CreationTime:         Timestamp{st.CreationTime},
		DataRetentionInHours: st.RetentionHours,
	}
}

type createStreamRequest struct {
	StreamName                 *string           `json:"StreamName"`
	DeviceName                 *string           `json:"DeviceName"`
	MediaType                  *string           `json:"MediaType"`
	KmsKeyID                   *string           `json:"KmsKeyId"`
	DataRetentionInHours       *int              `json:"DataRetentionInHours"`
	Tags                       map[string]string `json:"Tags"`
	StreamStorageConfiguration *struct {
		DefaultStorageTier *string `json:"DefaultStorageTier"`
	} `json:"StreamStorageConfiguration"`
}

// creationMillis returns the epoch milliseconds of a new stream's creation: now, or one past the
// last this server gave when that is later. The ARN carries them, and the live path tells a stream
// from one deleted and created again under its name by the ARN: two created within the same
// millisecond (a delete and a create back to back) must not share it.
func (s *Server) creationMillis() int64 {
	for {
		last := s.lastCreated.Load()
		ms := max(s.cfg.Now().UnixMilli(), last+1)
		if s.lastCreated.CompareAndSwap(last, ms) {
			return ms
		}
	}
}

// createStream implements CreateStream. Choice: the stream is ACTIVE at once (no CREATING
// window), so clients that poll DescribeStream proceed immediately.
func (s *Server) createStream(ctx context.Context, req *createStreamRequest) (createStreamResponse, error) {
	if req.StreamName == nil {
		return createStreamResponse{}, invalidArgf("StreamName is required.")
	}
	// The ARN carries the creation time in epoch milliseconds; CreationTime is that same instant.
	ms := s.creationMillis()
	st := store.Stream{
		Name:         *req.StreamName,
		ARN:          s.streamARN(*req.StreamName, ms),
		KmsKeyID:     s.defaultKmsKeyID(),
		Version:      newVersion(),
		Status:       "ACTIVE",
		CreationTime: time.UnixMilli(ms).UTC(),
	}
	err := validateStreamName("StreamName", *req.StreamName)
	if err == nil && req.DeviceName != nil {
		st.DeviceName, err = *req.DeviceName, validateDeviceName(*req.DeviceName)
	}
	if err == nil && req.MediaType != nil {
		st.MediaType, err = *req.MediaType, validateMediaType(*req.MediaType)
	}
	if err == nil && req.KmsKeyID != nil {
		st.KmsKeyID, err = *req.KmsKeyID, validateKmsKeyID(*req.KmsKeyID)
	}
	if err == nil && req.DataRetentionInHours != nil {
		st.RetentionHours, err = *req.DataRetentionInHours, validateRetention("DataRetentionInHours", *req.DataRetentionInHours)
	}
	if err == nil && req.Tags != nil {
		st.Tags, err = req.Tags, validateTags(req.Tags)
	}
	if err == nil && req.StreamStorageConfiguration != nil {
		// Accepted and validated, not stored: local storage has a single tier.
		tier := req.StreamStorageConfiguration.DefaultStorageTier
		if tier == nil || (*tier != "HOT" && *tier != "WARM") {
			err = invalidArgf("StreamStorageConfiguration.DefaultStorageTier must be HOT or WARM.")
		}
	}
	if err != nil {
		return createStreamResponse{}, err
	}
	if err := s.store.CreateStream(ctx, st); err != nil {
		return createStreamResponse{}, fmt.Errorf("create stream %s: %w", st.Name, err)
	}
	s.log.Info("stream created", "stream", st.Name, "retention_hours", st.RetentionHours)
	s.events.publish(&Event{Type: EventStreamCreated, Stream: st.Name})
	return createStreamResponse{st.ARN}, nil
}

type createStreamResponse struct {
	StreamARN string `json:"StreamARN"`
}

func (s *Server) describeStream(ctx context.Context, req *streamRef) (describeStreamResponse, error) {
	st, err := s.lookupStream(ctx, *req, codeInvalidArgument)
	if err != nil {
		return describeStreamResponse{}, err
	}
	return describeStreamResponse{toStreamInfo(st)}, nil
}

type describeStreamResponse struct {
	StreamInfo streamInfo `json:"StreamInfo"`
}

type listStreamsRequest struct {
	MaxResults          *int    `json:"MaxResults"`
	NextToken           *string `json:"NextToken"`
	StreamNameCondition *struct {
		ComparisonOperator *string `json:"ComparisonOperator"`
		ComparisonValue    *string `json:"ComparisonValue"`
	} `json:"StreamNameCondition"`
}

type listStreamsResponse struct {
	StreamInfoList []streamInfo `json:"StreamInfoList"`
	NextToken      string       `json:"NextToken,omitempty"`
}

// listStreams implements ListStreams in name order. NextToken is the standard base64 of the
// last name on the page (the model's token alphabet is [a-zA-Z0-9+/=]); the next page starts after
// that name, so it stays correct when streams are created or deleted between pages. The last page
// has no NextToken.
func (s *Server) listStreams(ctx context.Context, req *listStreamsRequest) (listStreamsResponse, error) {
	limit := 10000
	if req.MaxResults != nil {
		if *req.MaxResults < 1 || *req.MaxResults > 10000 {
			return listStreamsResponse{}, invalidArgf("MaxResults must be between 1 and 10000.")
		}
		limit = *req.MaxResults
	}
	after := ""
	if req.NextToken != nil && *req.NextToken != "" {
		name, err := base64.StdEncoding.DecodeString(*req.NextToken)
		if err != nil || len(*req.NextToken) > 1024 || validateStreamName("NextToken", string(name)) != nil {
			return listStreamsResponse{}, invalidArgf("NextToken is not a token returned by ListStreams.")
		}
		after = string(name)
	}
	prefix := ""
	if c := req.StreamNameCondition; c != nil {
		if c.ComparisonOperator != nil && *c.ComparisonOperator != "BEGINS_WITH" {
			return listStreamsResponse{}, invalidArgf("StreamNameCondition.ComparisonOperator must be BEGINS_WITH.")
		}
		if c.ComparisonValue != nil {
			if err := validateStreamName("StreamNameCondition.ComparisonValue", *c.ComparisonValue); err != nil {
				return listStreamsResponse{}, err
			}
			prefix = *c.ComparisonValue
		}
	}
	all, err := s.store.ListStreams(ctx)
	if err != nil {
		return listStreamsResponse{}, fmt.Errorf("list streams: %w", err)
	}
	resp := listStreamsResponse{StreamInfoList: []streamInfo{}}
	for _, st := range all { // sorted by name
		if st.Name <= after || !strings.HasPrefix(st.Name, prefix) {
			continue
		}
		if len(resp.StreamInfoList) == limit {
			resp.NextToken = base64.StdEncoding.EncodeToString([]byte(resp.StreamInfoList[limit-1].StreamName))
			break
		}
		resp.StreamInfoList = append(resp.StreamInfoList, toStreamInfo(st))
	}
	return resp, nil
}

type deleteStreamRequest struct {
	StreamARN      *string `json:"StreamARN"`
	CurrentVersion *string `json:"CurrentVersion"`
}

// deleteStream implements DeleteStream: StreamARN is required (the API takes no name);
// without CurrentVersion the version is not checked. The stream and its data go at once.
func (s *Server) deleteStream(ctx context.Context, req *deleteStreamRequest) (empty, error) {
	if req.StreamARN == nil {
		return empty{}, invalidArgf("StreamARN is required.")
	}
	if req.CurrentVersion != nil {
		if err := validateVersion("CurrentVersion", *req.CurrentVersion); err != nil {
			return empty{}, err
		}
	}
	st, err := s.deleteByARN(ctx, *req.StreamARN, req.CurrentVersion)
	if err != nil {
		return empty{}, err
	}
	s.streamDeleted(st)
	s.log.Info("stream deleted", "stream", st.Name)
	return empty{}, nil
}

// maxDeleteAttempts bounds deleteByARN's retries on a stream that keeps changing under it.
const maxDeleteAttempts = 10

// deleteByARN deletes the stream arn names and returns it. The version check happens in
// the store's conditional delete, atomically with the delete, so no server lock is needed. The
// delete always names the version the lookup saw (= currentVersion when one is given): a stream
// deleted and created again under that name since has a new random version, so an old ARN can
// never delete it. A change between the lookup and the delete (an update, or a re-creation)
// makes the store answer ErrVersionMismatch, and the lookup is done again: it then finds the
// stream gone, or its new version, and answers as if the change had come first.
func (s *Server) deleteByARN(ctx context.Context, arn string, currentVersion *string) (store.Stream, error) {
	var err error
	for range maxDeleteAttempts {
		var st store.Stream
		st, err = s.lookupStream(ctx, streamRef{StreamARN: &arn}, codeInvalidArgument)
		if err != nil {
			return store.Stream{}, err
		}
		if currentVersion != nil && *currentVersion != st.Version {
			return store.Stream{}, versionMismatch(st.Name)
		}
		err = s.store.DeleteStream(ctx, st.Name, st.Version)
		if err == nil {
			return st, nil
		}
		err = fmt.Errorf("delete stream %s: %w", st.Name, err)
		if !errors.Is(err, store.ErrVersionMismatch) {
			return store.Stream{}, err
		}
	}
	return store.Stream{}, err // still changing: ErrVersionMismatch, which the client sees as such
}

func versionMismatch(name string) error {
	return apiErrorf(codeVersionMismatch, "The version of stream %s does not match CurrentVersion.", name)
}

// updateVersion is update for the calls that name the stream's CurrentVersion: a stream of
// another version is VersionMismatchException, and a change fn accepts gets a new version.
func (s *Server) updateVersion(ctx context.Context, ref streamRef, current string, fn func(*store.Stream) error) (store.Stream, error) {
	return s.update(ctx, ref, codeInvalidArgument, func(st *store.Stream) error {
		if st.Version != current {
			return versionMismatch(st.Name)
		}
		if err := fn(st); err != nil {
			return err
		}
		st.Version = newVersion()
		return nil
	})
}

// update looks up the stream and applies fn to it inside the store's atomic UpdateStream. fn
// sees a copy and may return an error to change nothing. The ARN is re-checked inside the
// update so that a stream re-created under the same name is never updated by an old reference.
func (s *Server) update(ctx context.Context, ref streamRef, badARNCode string, fn func(*store.Stream) error) (store.Stream, error) {
	st, err := s.lookupStream(ctx, ref, badARNCode)
	if err != nil {
		return store.Stream{}, err
	}
	return s.store.UpdateStream(ctx, st.Name, func(cur *store.Stream) error {
		if cur.ARN != st.ARN {
			return fmt.Errorf("stream %s: %w", st.Name, store.ErrStreamNotFound)
		}
		return fn(cur)
	})
}

type updateStreamRequest struct {
	streamRef
	CurrentVersion *string `json:"CurrentVersion"`
	DeviceName     *string `json:"DeviceName"`
	MediaType      *string `json:"MediaType"`
}

// updateStream implements UpdateStream: DeviceName and/or MediaType change, Version is new.
// The stream stays ACTIVE (no UPDATING window).
func (s *Server) updateStream(ctx context.Context, req *updateStreamRequest) (empty, error) {
	var err error
	if req.CurrentVersion == nil {
		err = invalidArgf("CurrentVersion is required.")
	} else {
		err = validateVersion("CurrentVersion", *req.CurrentVersion)
	}
	if err == nil && req.DeviceName != nil {
		err = validateDeviceName(*req.DeviceName)
	}
	if err == nil && req.MediaType != nil {
		err = validateMediaType(*req.MediaType)
	}
	if err != nil {
		return empty{}, err
	}
	_, err = s.updateVersion(ctx, req.streamRef, *req.CurrentVersion, func(st *store.Stream) error {
		if req.DeviceName != nil {
			st.DeviceName = *req.DeviceName
		}
		if req.MediaType != nil {
			st.MediaType = *req.MediaType
		}
		return nil
	})
	return empty{}, err
}

type updateDataRetentionRequest struct {
	streamRef
	CurrentVersion             *string `json:"CurrentVersion"`
	Operation                  *string `json:"Operation"`
	DataRetentionChangeInHours *int    `json:"DataRetentionChangeInHours"`
}

// updateDataRetention implements UpdateDataRetention. The new retention must stay within
// 0–87600 hours, else InvalidArgumentException (the model does not say; [I] in kvs-api.md). After a
// decrease, fragments older than the new window are deleted before the response, for up to
// decreasePurgeWait; what is left then goes in the next retention passes.
func (s *Server) updateDataRetention(ctx context.Context, req *updateDataRetentionRequest) (empty, error) {
	var err error
	switch {
	case req.CurrentVersion == nil:
		err = invalidArgf("CurrentVersion is required.")
	case req.Operation == nil:
		err = invalidArgf("Operation is required.")
	case *req.Operation != "INCREASE_DATA_RETENTION" && *req.Operation != "DECREASE_DATA_RETENTION":
		err = invalidArgf("Operation must be INCREASE_DATA_RETENTION or DECREASE_DATA_RETENTION.")
	case req.DataRetentionChangeInHours == nil:
		err = invalidArgf("DataRetentionChangeInHours is required.")
	case *req.DataRetentionChangeInHours < 1:
		err = invalidArgf("DataRetentionChangeInHours must be at least 1.")
	default:
		err = validateVersion("CurrentVersion", *req.CurrentVersion)
	}
	if err != nil {
		return empty{}, err
	}
	decrease := *req.Operation == "DECREASE_DATA_RETENTION"
	st, err := s.updateVersion(ctx, req.streamRef, *req.CurrentVersion, func(st *store.Stream) error {
		change := *req.DataRetentionChangeInHours
		if change > maxRetentionHrs { // also keeps the sum below from overflowing
			return invalidArgf("DataRetentionChangeInHours must be at most %d.", maxRetentionHrs)
		}
		hours := st.RetentionHours + change
		if decrease {
			hours = st.RetentionHours - change
		}
		if hours < 0 || hours > maxRetentionHrs {
			return invalidArgf("The new data retention of %d hours is outside 0 to %d.", hours, maxRetentionHrs)
		}
		st.RetentionHours = hours
		return nil
	})
	if err != nil {
		return empty{}, err
	}
	s.log.Info("data retention changed", "stream", st.Name, "retention_hours", st.RetentionHours)
	if decrease {
		pctx, cancel := context.WithTimeout(ctx, s.purgeWait)
		n, err := s.store.EnforceRetention(pctx, s.cfg.Now())
		cancel()
		switch {
		case err != nil && pctx.Err() != nil && ctx.Err() == nil:
			s.log.Info("retention purge after decrease: answered before the cleanup pass ended; the next passes go on with it",
				"stream", st.Name, "fragments", n, "after", s.purgeWait)
		case err != nil:
			// The change itself is stored; the next retention pass will retry the purge.
			s.log.Warn("retention purge after decrease", "stream", st.Name, "fragments", n, "err", err)
		case n > 0:
			s.log.Info("retention purge", "fragments", n)
		}
	}
	return empty{}, nil
}

// decreasePurgeWait bounds the purge an UpdateDataRetention decrease runs before it answers. A
// purge of tens of millions of fragments (a cluster's, in steps) can take minutes; the AWS CLI
// gives up on an answer after 60 s and sends the request again, which then fails with
// VersionMismatchException although the change was made. The change is stored before the purge,
// and the retention passes go on with what is left.
const decreasePurgeWait = 20 * time.Second

// apiNames are the GetDataEndpoint APIName values (kvs-api.md §4).
var apiNames = map[string]bool{
	"PUT_MEDIA": true, "GET_MEDIA": true, "LIST_FRAGMENTS": true, "GET_MEDIA_FOR_FRAGMENT_LIST": true,
	"GET_HLS_STREAMING_SESSION_URL": true, "GET_DASH_STREAMING_SESSION_URL": true, "GET_CLIP": true,
	"GET_IMAGES": true,
}

type getDataEndpointRequest struct {
	streamRef
	APIName *string `json:"APIName"`
}

// getDataEndpoint implements GetDataEndpoint: one endpoint for every APIName, this server's, or
// on a cluster the URL of the node that writes the stream (as KVS names a per-stream endpoint).
func (s *Server) getDataEndpoint(ctx context.Context, req *getDataEndpointRequest) (dataEndpointResponse, error) {
	if req.APIName == nil || !apiNames[*req.APIName] {
		return dataEndpointResponse{}, invalidArgf("APIName must be one of PUT_MEDIA, GET_MEDIA, LIST_FRAGMENTS, GET_MEDIA_FOR_FRAGMENT_LIST, GET_HLS_STREAMING_SESSION_URL, GET_DASH_STREAMING_SESSION_URL, GET_CLIP, GET_IMAGES.")
	}
	st, err := s.lookupStream(ctx, req.streamRef, codeInvalidArgument)
	if err != nil {
		return dataEndpointResponse{}, err
	}
	ep, err := s.dataEndpointOf(ctx, st.Name)
	if err != nil {
		return dataEndpointResponse{}, err
	}
	return dataEndpointResponse{ep}, nil
}

type dataEndpointResponse struct {
	DataEndpoint string `json:"DataEndpoint"`
}
