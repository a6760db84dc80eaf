package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// HLS session tokens are self-contained: the session's settings in JSON, base64url, a dot and
// the first 16 bytes of their HMAC-SHA256 under the server's session key (Config.SessionKey),
// base64url too, so the token needs no escaping in a URL. Any node with the same key verifies
// one without shared state; nodes of a cluster share the key. A token is not secret from its
// holder (it names the stream and the range), only unforgeable: whoever has the URL can play
// the session, as with KVS.

// sessionTokenVersion is the claims layout; a token of another version is not found.
const sessionTokenVersion = 1

// maxSessionToken bounds the SessionToken parameter: a stream ARN is at most 1024 characters,
// the rest of the claims about 200.
const maxSessionToken = 2048

type sessionClaims struct {
	V        int    `json:"v"`
	Stream   string `json:"s"`
	ARN      string `json:"a"`
	Mode     string `json:"m"`
	Producer bool   `json:"p,omitempty"` // PRODUCER_TIMESTAMP selector
	Start    *int64 `json:"b,omitempty"` // Unix ns; LIVE_REPLAY, ON_DEMAND
	End      *int64 `json:"e,omitempty"` // Unix ns; absent: open
	Disc     string `json:"d"`
	ShowTime bool   `json:"t,omitempty"`
	Max      int    `json:"n"`
	Created  int64  `json:"c"` // Unix ms
	Expires  int64  `json:"x"` // Unix s
	Target   int    `json:"g"`
	First    uint64 `json:"f,omitempty"`
	TS       bool   `json:"ts,omitempty"` // ContainerFormat MPEG_TS
	Nonce    string `json:"r"`            // makes every session's token distinct

	DASH       bool  `json:"k,omitempty"`
	ShowNumber bool  `json:"fn,omitempty"`
	Offset     int64 `json:"o,omitempty"` // ms
}

// sign returns sess's token.
func (p *playback) sign(sess *hlsSession) string {
	c := sessionClaims{V: sessionTokenVersion, Stream: sess.stream, ARN: sess.arn, Mode: sess.mode,
		Producer: sess.kind == store.ProducerTime, Disc: sess.disc, ShowTime: sess.showTime, Max: sess.max,
		Created: sess.created.UnixMilli(), Expires: sess.expires.Unix(), Target: sess.target, First: sess.first, TS: sess.ts,
		Nonce: rand.Text()[:8], DASH: sess.dash, ShowNumber: sess.showNumber, Offset: sess.offset.Milliseconds()}
	// Clamped: UnixNano wraps around outside 1678 to 2262, and a request may name any time
	// from year -5138 to 5138 (Timestamp).
	if !sess.start.IsZero() {
		ns := clampNanos(sess.start)
		c.Start = &ns
	}
	if !sess.end.IsZero() {
		ns := clampNanos(sess.end)
		c.End = &ns
	}
	body, _ := json.Marshal(c) // plain strings and numbers: cannot fail
	enc := base64.RawURLEncoding
	return enc.EncodeToString(body) + "." + enc.EncodeToString(p.mac(body))
}

func (p *playback) mac(body []byte) []byte {
	h := hmac.New(sha256.New, p.key)
	h.Write(body)
	return h.Sum(nil)[:16]
}

// verify returns the session of a token this server (or one with its key) signed; false for
// anything else. Expiry is the caller's check.
func (p *playback) verify(tok string) (*hlsSession, bool) {
	if len(tok) > maxSessionToken {
		return nil, false
	}
	b64, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return nil, false
	}
	enc := base64.RawURLEncoding
	body, err1 := enc.DecodeString(b64)
	mac, err2 := enc.DecodeString(sig)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, p.mac(body)) {
		return nil, false
	}
	var c sessionClaims
	if json.Unmarshal(body, &c) != nil || c.V != sessionTokenVersion {
		return nil, false
	}
	sess := &hlsSession{token: tok, stream: c.Stream, arn: c.ARN, mode: c.Mode, kind: store.ServerTime,
		disc: c.Disc, showTime: c.ShowTime, max: c.Max, created: time.UnixMilli(c.Created),
		expires: time.Unix(c.Expires, 0), target: c.Target, first: c.First, ts: c.TS,
		dash: c.DASH, showNumber: c.ShowNumber, offset: time.Duration(c.Offset) * time.Millisecond}
	if c.Producer {
		sess.kind = store.ProducerTime
	}
	if c.Start != nil {
		sess.start = time.Unix(0, *c.Start)
	}
	if c.End != nil {
		sess.end = time.Unix(0, *c.End)
	}
	return sess, true
}
