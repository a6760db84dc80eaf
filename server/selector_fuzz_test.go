package server

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// selectorSeeds are GetMedia and ListFragments bodies: valid ones and the hostile shapes of the
// request-error tables.
var selectorSeeds = []string{
	`{"StreamName":"cam","StartSelector":{"StartSelectorType":"NOW"}}`,
	`{"StreamName":"cam","StartSelector":{"StartSelectorType":"EARLIEST"}}`,
	`{"StartSelector":{"StartSelectorType":"FRAGMENT_NUMBER","AfterFragmentNumber":"91343852333000000000000000000000000000000000003"}}`,
	`{"StartSelector":{"StartSelectorType":"FRAGMENT_NUMBER","AfterFragmentNumber":"12a"}}`,
	`{"StartSelector":{"StartSelectorType":"CONTINUATION_TOKEN","ContinuationToken":"91343852333000000000000000000000000000000000003"}}`,
	`{"StartSelector":{"StartSelectorType":"CONTINUATION_TOKEN","ContinuationToken":"a.b-c_d"}}`,
	`{"StartSelector":{"StartSelectorType":"SERVER_TIMESTAMP","StartTimestamp":1.625157638783E9}}`,
	`{"StartSelector":{"StartSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":"now"}}`,
	`{"StartSelector":{"StartSelectorType":"LATEST"}}`,
	`{"StartSelector":null}`,
	`{"MaxResults":3,"FragmentSelector":{"FragmentSelectorType":"SERVER_TIMESTAMP","TimestampRange":{"StartTimestamp":10,"EndTimestamp":20}}}`,
	`{"FragmentSelector":{"FragmentSelectorType":"PRODUCER_TIMESTAMP","TimestampRange":{"StartTimestamp":1e11,"EndTimestamp":-1e11}}}`,
	`{"MaxResults":0}`,
	`{"NextToken":"eyJrIjoiTiIsIm4iOjN9"}`,
	`{"NextToken":"eyJrIjoiUyIsInMiOjEsImUiOjIsInQiOjAsIm4iOjV9"}`,
	`{"NextToken":"!!"}`,
	``,
}

// FuzzStartSelector decodes arbitrary bodies as GetMedia and ListFragments requests the way the
// handlers do. Properties: no panic; a rejection is always an InvalidArgumentException or
// ResourceNotFoundException (never a 500); an accepted selector is one of the six types with a
// number that formats back to a fragment number; an accepted ListFragments query round-trips
// through its NextToken, and the token is within the model's pattern and length.
func FuzzStartSelector(f *testing.F) {
	for _, s := range selectorSeeds {
		f.Add(s)
	}
	st := newMediaEnv(f, "mem")
	s := st.srv
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/getMedia", strings.NewReader(body))
		var gm getMediaRequest
		if err := s.decodeJSON(httptest.NewRecorder(), req, &gm); err != nil {
			checkClientError(t, err)
		} else if spec, err := parseStartSelector(gm.StartSelector); err != nil {
			checkClientError(t, err)
		} else {
			switch spec.Type {
			case selNow, selEarliest, selServerTimestamp, selProducerTimestamp:
			case selFragmentNumber, selContinuationToken:
				if n, err := parseFragmentNumber(formatFragmentNumber(spec.Number)); err != nil || n != spec.Number {
					t.Fatalf("selector number %d does not round-trip", spec.Number)
				}
			default:
				t.Fatalf("accepted selector type %q", spec.Type)
			}
		}

		req = httptest.NewRequest("POST", "/listFragments", strings.NewReader(body))
		var lf listFragmentsRequest
		if err := s.decodeJSON(httptest.NewRecorder(), req, &lf); err != nil {
			checkClientError(t, err)
			return
		}
		q, limit, err := parseListFragments(&lf)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if limit < 1 || limit > maxListFragments {
			t.Fatalf("limit %d", limit)
		}
		tok := encodeListToken(q)
		if len(tok) > maxNextTokenLen || strings.TrimRight(strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"), "=") != "" {
			t.Fatalf("token %q breaks the model's pattern", tok)
		}
		back, err := decodeListToken(tok)
		if err != nil || back != q {
			t.Fatalf("query %+v → token %q → %+v, %v", q, tok, back, err)
		}
	})
}

func checkClientError(t *testing.T, err error) {
	t.Helper()
	ae, ok := toAPIError(err)
	if !ok || (ae.Code != codeInvalidArgument && ae.Code != codeResourceNotFound) {
		t.Fatalf("error %v is not a client error", err)
	}
}
