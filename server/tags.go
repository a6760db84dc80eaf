package server

import (
	"context"
	"maps"

	"github.com/openkvs/kvs/server/store"
)

// Tagging (kvs-api.md §3). Shared rules:
//   - An existing key gets the new value; untagging a missing key is not an error.
//   - More than 50 tags on a stream after the change: TagsPerResourceExceededLimitException, and
//     nothing changes.
//   - Choice for [?] "does tagging change Version": no. Version guards the stream's settings
//     (DeviceName, MediaType, retention) that UpdateStream / UpdateDataRetention / DeleteStream check;
//     tags are not among them, and a tag change must not make a concurrent UpdateStream fail.
//   - Choice for [?] "stream ARNs in TagResource & co": accepted; they are the only resources kvs has.
//     ARNs of other resource types (channel/...) are well-formed but not found (404).
//   - A malformed StreamARN in TagStream / UntagStream / ListTagsForStream is
//     InvalidResourceFormatException, as their model says; in the *Resource operations, whose model
//     lacks that error, it is InvalidArgumentException.
//   - ListTags* return every tag at once (at most 50) and so never a NextToken; a NextToken in the
//     request is ignored.

type tagStreamRequest struct {
	streamRef
	Tags map[string]string `json:"Tags"`
}

func (s *Server) tagStream(ctx context.Context, req *tagStreamRequest) (empty, error) {
	return s.tag(ctx, req.streamRef, codeInvalidResourceFormat, req.Tags)
}

type untagStreamRequest struct {
	streamRef
	TagKeyList []string `json:"TagKeyList"`
}

func (s *Server) untagStream(ctx context.Context, req *untagStreamRequest) (empty, error) {
	return s.untag(ctx, req.streamRef, codeInvalidResourceFormat, req.TagKeyList)
}

type listTagsForStreamRequest struct {
	streamRef
	NextToken *string `json:"NextToken"`
}

func (s *Server) listTagsForStream(ctx context.Context, req *listTagsForStreamRequest) (tagsResponse, error) {
	return s.listTags(ctx, req.streamRef, codeInvalidResourceFormat)
}

type tagResourceRequest struct {
	ResourceARN *string `json:"ResourceARN"`
	Tags        []struct {
		Key   *string `json:"Key"`
		Value *string `json:"Value"`
	} `json:"Tags"`
}

func (s *Server) tagResource(ctx context.Context, req *tagResourceRequest) (empty, error) {
	ref, err := resourceRef(req.ResourceARN)
	if err != nil {
		return empty{}, err
	}
	if len(req.Tags) > maxTagsPerStream {
		return empty{}, apiErrorf(codeTagsPerResourceLimit, "A resource can have at most %d tags.", maxTagsPerStream)
	}
	tags := make(map[string]string, len(req.Tags))
	for _, t := range req.Tags {
		if t.Key == nil || t.Value == nil {
			return empty{}, invalidArgf("Every tag must have a Key and a Value.")
		}
		tags[*t.Key] = *t.Value // a repeated key: the last value wins
	}
	return s.tag(ctx, ref, codeInvalidArgument, tags)
}

type untagResourceRequest struct {
	ResourceARN *string  `json:"ResourceARN"`
	TagKeyList  []string `json:"TagKeyList"`
}

func (s *Server) untagResource(ctx context.Context, req *untagResourceRequest) (empty, error) {
	ref, err := resourceRef(req.ResourceARN)
	if err != nil {
		return empty{}, err
	}
	return s.untag(ctx, ref, codeInvalidArgument, req.TagKeyList)
}

type listTagsForResourceRequest struct {
	ResourceARN *string `json:"ResourceARN"`
	NextToken   *string `json:"NextToken"`
}

func (s *Server) listTagsForResource(ctx context.Context, req *listTagsForResourceRequest) (tagsResponse, error) {
	ref, err := resourceRef(req.ResourceARN)
	if err != nil {
		return tagsResponse{}, err
	}
	return s.listTags(ctx, ref, codeInvalidArgument)
}

// resourceRef checks a ResourceARN member and turns it into a stream reference. ARNs of other
// resource types are not found.
func resourceRef(arn *string) (streamRef, error) {
	if arn == nil {
		return streamRef{}, invalidArgf("ResourceARN is required.")
	}
	a, err := parseARN("ResourceARN", *arn, codeInvalidArgument)
	if err != nil {
		return streamRef{}, err
	}
	if a.ResourceType != "stream" {
		return streamRef{}, apiErrorf(codeResourceNotFound, msgResourceNotFoundGeneric)
	}
	return streamRef{StreamARN: arn}, nil
}

// tag checks tags and adds them to the stream (TagStream, TagResource).
func (s *Server) tag(ctx context.Context, ref streamRef, badARNCode string, tags map[string]string) (empty, error) {
	if err := validateTags(tags); err != nil {
		return empty{}, err
	}
	_, err := s.update(ctx, ref, badARNCode, func(st *store.Stream) error {
		merged := maps.Clone(st.Tags)
		if merged == nil {
			merged = make(map[string]string, len(tags))
		}
		maps.Copy(merged, tags)
		if len(merged) > maxTagsPerStream {
			return apiErrorf(codeTagsPerResourceLimit, "A resource can have at most %d tags; this request would make %d.", maxTagsPerStream, len(merged))
		}
		st.Tags = merged
		return nil
	})
	return empty{}, err
}

// untag checks keys and removes those tags from the stream (UntagStream, UntagResource).
func (s *Server) untag(ctx context.Context, ref streamRef, badARNCode string, keys []string) (empty, error) {
	if err := validateTagKeyList(keys); err != nil {
		return empty{}, err
	}
	_, err := s.update(ctx, ref, badARNCode, func(st *store.Stream) error {
		tags := maps.Clone(st.Tags)
		for _, k := range keys {
			delete(tags, k)
		}
		st.Tags = tags
		return nil
	})
	return empty{}, err
}

// listTags answers ListTagsForStream / ListTagsForResource. Tags is always present ({} when the
// stream has none), which the CLI prints as "Tags": {}.
func (s *Server) listTags(ctx context.Context, ref streamRef, badARNCode string) (tagsResponse, error) {
	st, err := s.lookupStream(ctx, ref, badARNCode)
	if err != nil {
		return tagsResponse{}, err
	}
	tags := st.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return tagsResponse{tags}, nil
}

type tagsResponse struct {
	Tags map[string]string `json:"Tags"`
}
