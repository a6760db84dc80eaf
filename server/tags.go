package server

import (
	"maps"
	"net/http"

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

func (s *Server) handleTagStream(w http.ResponseWriter, r *http.Request) {
	var req tagStreamRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateTags(req.Tags); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.tag(w, r, req.streamRef, codeInvalidResourceFormat, req.Tags)
}

type untagStreamRequest struct {
	streamRef
	TagKeyList []string `json:"TagKeyList"`
}

func (s *Server) handleUntagStream(w http.ResponseWriter, r *http.Request) {
	var req untagStreamRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateTagKeyList(req.TagKeyList); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.untag(w, r, req.streamRef, codeInvalidResourceFormat, req.TagKeyList)
}

type listTagsForStreamRequest struct {
	streamRef
	NextToken *string `json:"NextToken"`
}

func (s *Server) handleListTagsForStream(w http.ResponseWriter, r *http.Request) {
	var req listTagsForStreamRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.listTags(w, r, req.streamRef, codeInvalidResourceFormat)
}

type tagResourceRequest struct {
	ResourceARN *string `json:"ResourceARN"`
	Tags        []struct {
		Key   *string `json:"Key"`
		Value *string `json:"Value"`
	} `json:"Tags"`
}

func (s *Server) handleTagResource(w http.ResponseWriter, r *http.Request) {
	var req tagResourceRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	ref, err := resourceRef(req.ResourceARN)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(req.Tags) > maxTagsPerStream {
		s.writeError(w, r, apiErrorf(codeTagsPerResourceLimit, "A resource can have at most %d tags.", maxTagsPerStream))
		return
	}
	tags := make(map[string]string, len(req.Tags))
	for _, t := range req.Tags {
		if t.Key == nil || t.Value == nil {
			s.writeError(w, r, invalidArgf("Every tag must have a Key and a Value."))
			return
		}
		tags[*t.Key] = *t.Value // a repeated key: the last value wins
	}
	if err := validateTags(tags); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.tag(w, r, ref, codeInvalidArgument, tags)
}

type untagResourceRequest struct {
	ResourceARN *string  `json:"ResourceARN"`
	TagKeyList  []string `json:"TagKeyList"`
}

func (s *Server) handleUntagResource(w http.ResponseWriter, r *http.Request) {
	var req untagResourceRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	ref, err := resourceRef(req.ResourceARN)
	if err == nil {
		err = validateTagKeyList(req.TagKeyList)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.untag(w, r, ref, codeInvalidArgument, req.TagKeyList)
}

type listTagsForResourceRequest struct {
	ResourceARN *string `json:"ResourceARN"`
	NextToken   *string `json:"NextToken"`
}

func (s *Server) handleListTagsForResource(w http.ResponseWriter, r *http.Request) {
	var req listTagsForResourceRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	ref, err := resourceRef(req.ResourceARN)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.listTags(w, r, ref, codeInvalidArgument)
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

func (s *Server) tag(w http.ResponseWriter, r *http.Request, ref streamRef, badARNCode string, tags map[string]string) {
	_, err := s.update(r, ref, badARNCode, func(st *store.Stream) error {
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
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, empty{})
}

func (s *Server) untag(w http.ResponseWriter, r *http.Request, ref streamRef, badARNCode string, keys []string) {
	_, err := s.update(r, ref, badARNCode, func(st *store.Stream) error {
		tags := maps.Clone(st.Tags)
		for _, k := range keys {
			delete(tags, k)
		}
		st.Tags = tags
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, empty{})
}

// listTags answers ListTagsForStream / ListTagsForResource. Tags is always present ({} when the
// stream has none), which the CLI prints as "Tags": {}.
func (s *Server) listTags(w http.ResponseWriter, r *http.Request, ref streamRef, badARNCode string) {
	st, err := s.lookupStream(r.Context(), ref, badARNCode)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tags := st.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	s.writeJSON(w, r, struct {
		Tags map[string]string `json:"Tags"`
	}{tags})
}
