// kvs console: the live player (the stream page, app.js, uses it). Plain JavaScript, no build
// step; it runs with app.js's helpers (api, sleep, streamGone), which load after it and are
// called only once the page runs.
'use strict';

// ---- player -------------------------------------------------------------------------------

// Player plays an HLS session through MSE: it reads the master playlist for the codecs, then
// polls the media playlist and appends each new fragment (and each new init segment) to one
// SourceBuffer. Times: the fragments carry producer time since the epoch; timestampOffset moves
// the first fragment to 0, so producer time = origin + currentTime.
//
// It starts playback itself (muted, so browsers allow it without a gesture): LIVE a few seconds
// behind the newest fragment, other modes at startAt (producer seconds). While playing it steps
// over holes between buffered ranges (a producer's fragments need not touch, and MSE stalls at
// any hole; fragments are appended in time order, so nothing will fill it) and, LIVE only,
// catches up when it falls far behind. A session expires (Expires, 300 s by default): when
// its playlist is refused, the player asks for a new one that goes on where the old one was.
const liveSessions = new Map(); // stream → { url, until (ms) }: its LIVE session, for the next visit (Player.open)
const LIVE_DELAY = 3; // seconds behind the newest media that LIVE starts at
const LIVE_MAX_BEHIND = 8; // LIVE jumps back to LIVE_DELAY when further behind than this
const SMALL_HOLE = 0.5; // seconds: fragments closer than this are one run on the timeline, and the player steps over the hole

class Player {
  constructor(video, onNotice, onState = () => {}, onSeek = () => {}) {
    this.video = video; this.onNotice = onNotice; this.onState = onState; this.onSeek = onSeek;
    this.seekingTo = NaN; // the media time the player itself last moved the playhead to
    this.stopped = false; this.origin = 0; this.fragments = 0; this.started = false; this.blocked = false;
    this.lastPdt = 0; // producer time of the newest fragment appended
  }

  // open asks for a streaming session and reads its master playlist. A LIVE session is kept for
  // the next visit of the stream's page (fresh: ask for a new one all the same): a stream has at
  // most 10 sessions at once, each for its Expires, and going back and forth between the list
  // and a stream's page must not use them up.
  async open(session, fresh = false) {
    const key = session.PlaybackMode === 'LIVE' ? session.StreamName : null;
    const kept = key && !fresh ? liveSessions.get(key) : null;
    let url = kept && kept.until > Date.now() ? kept.url : null;
    if (!url) {
      ({ HLSStreamingSessionURL: url } = await api('/getHLSStreamingSessionURL', session));
      // The URL names the server's data endpoint (--advertise-url when set), which need not be the
      // URL this page was opened by; the session is on the server that answered, which this
      // page's origin reaches (and the only one its Content-Security-Policy lets it fetch from).
      const u = new URL(url, location.href);
      url = location.origin + u.pathname + u.search;
      if (key) liveSessions.set(key, { url, until: Date.now() + 240000 }); // Expires is 300 s
    }
    const r = await fetch(url);
    if (!r.ok && url === kept?.url) { liveSessions.delete(key); return this.open(session, true); }
    if (!r.ok) throw new Error(`master playlist: ${r.status}`);
    const master = await r.text();
    this.hlsURL = url;
    this.codecs = /CODECS="([^"]+)"/.exec(master)?.[1] || '';
    this.media = new URL(master.split('\n').find((l) => l && !l.startsWith('#')), url);
  }

  // renew replaces an expired session by one that continues after the newest fragment appended.
  async renew() {
    const s = structuredClone(this.session);
    if (s.PlaybackMode !== 'LIVE' && this.lastPdt) s.HLSFragmentSelector.TimestampRange = { StartTimestamp: this.lastPdt + 0.001 };
    for (;;) {
      if (this.stopped) return;
      try { await this.open(s, true); this.onState(''); return; } catch (e) {
        if (streamGone(e)) throw e; // deleted: no session will come
        this.onState(`reconnecting: ${e.message}`);
      }
      await sleep(1000);
    }
  }

  // play runs until stop() or, for a complete playlist, until its last fragment is appended.
  async play(session, startAt) {
    this.session = session;
    this.liveSession = this.live = session.PlaybackMode === 'LIVE';
    this.startAt = startAt;
    // LIVE is refused while the stream has had no fragment for 30 s (a new stream, a producer not
    // started yet), any session while the stream has all it may have: ask again until it plays.
    for (;;) {
      try { await this.open(session); break; } catch (e) {
        if (this.stopped) return;
        if (!/^ClientLimitExceeded/.test(e.message) && !(this.live && /^ResourceNotFound.*No fragments/.test(e.message))) throw e;
        this.onState(`waiting: ${e.message}`);
        await sleep(2000);
      }
    }
    this.onState('');
    const codecs = this.codecs;
    this.hevc = codecs.startsWith('hvc1') || codecs.startsWith('hev1');
    const mime = `video/mp4; codecs="${codecs}"`;
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) { this.cannotPlay(mime); return; }
    if (this.stopped) return;
    this.ms = new MediaSource();
    this.objectURL = URL.createObjectURL(this.ms);
    this.video.src = this.objectURL;
    await new Promise((r) => this.ms.addEventListener('sourceopen', r, { once: true }));
    if (this.stopped) return;
    this.sb = this.ms.addSourceBuffer(mime);
    this.sb.mode = 'segments';
    this.watch = setInterval(() => this.tick(), 250);
    this.video.addEventListener('waiting', this.onWaiting = () => setTimeout(() => this.tick(), 50));
    // A seek the player did not make is the user's, with the video's own seek bar: LIVE stops
    // following the live edge there (it took the position for lag and jumped back at once),
    // unless it is at the edge.
    this.video.addEventListener('seeking', this.onSeeking = () => this.userSeek());
    this.video.addEventListener('error', this.onError = () => {
      if (this.hevc) this.cannotPlay(mime);
      else { this.onNotice(`Playback failed: ${this.video.error?.message || 'decode error'}`); this.stop(); }
    });
    const done = new Set(), failed = new Map();
    let init = '';
    while (!this.stopped) {
      const media = this.media;
      let text;
      try {
        const r = await fetch(media);
        if (r.status >= 400 && r.status < 500) { this.onState('session expired: renewing'); await this.renew(); continue; }
        if (!r.ok) throw new Error(`media playlist: ${r.status}`);
        text = await r.text();
        this.onState('');
      } catch (e) {
        if (streamGone(e)) throw e; // from renew: the stream was deleted
        this.onState(`retrying: ${e.message}`);
        await sleep(1000);
        continue;
      }
      let map = '', pdt = 0;
      for (const line of text.split('\n')) {
        if (this.stopped) return;
        if (line.startsWith('#EXT-X-MAP:URI=')) map = new URL(line.slice(16, -1), media).href;
        else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) pdt = Date.parse(line.slice(25)) / 1000;
        else if (line && !line.startsWith('#')) {
          const seg = new URL(line, media);
          const n = seg.searchParams.get('FragmentNumber'); // the same in every session
          if (done.has(n)) continue;
          let bytes, initBytes;
          try {
            bytes = await this.fetchBytes(seg);
            if (map !== init) initBytes = await this.fetchBytes(map);
          } catch (_) {
            // The session expired (the next poll renews it), the network failed for a moment
            // (the next poll asks again), or the fragment is gone (after a few tries, skip it).
            failed.set(n, (failed.get(n) || 0) + 1);
            if (failed.get(n) >= 3) done.add(n);
            break;
          }
          if (initBytes) { await this.append(initBytes); init = map; }
          if (!this.origin && pdt) { this.origin = pdt; this.sb.timestampOffset = -pdt; this.video.dataset.origin = pdt; }
          await this.append(bytes);
          done.add(n);
          this.fragments++;
          if (pdt) this.lastPdt = pdt;
        }
      }
      // Forget the fragments this playlist no longer lists: a playlist that moved on never lists
      // them again, and a page left playing for weeks must not keep a number per fragment played.
      const listed = new Set(text.split('\n').filter((l) => l && !l.startsWith('#'))
        .map((l) => new URL(l, media).searchParams.get('FragmentNumber')));
      for (const n of done) if (!listed.has(n)) done.delete(n);
      for (const n of failed.keys()) if (!listed.has(n)) failed.delete(n);
      if (!this.started && this.fragments) this.begin();
      if (text.includes('#EXT-X-ENDLIST')) { if (this.ms.readyState === 'open' && !this.sb.updating) this.ms.endOfStream(); return; }
      await this.trim();
      await sleep(500);
    }
  }

  // begin seeks to where playback starts and plays, muted.
  begin() {
    const b = this.sb.buffered;
    if (!b.length) return;
    this.started = true;
    let t = this.live ? Math.max(b.start(b.length - 1), b.end(b.length - 1) - LIVE_DELAY)
      : Math.max(b.start(0), (this.startAt || 0) - this.origin);
    this.seek(t);
    this.resume();
  }

  // seekTo plays from producer time t if the player holds it (no new session), and stops
  // following the live edge; it reports whether it could. A hole under SMALL_HOLE between two
  // buffered ranges does not end the media held: fragments need not touch (a looping source leaves
  // one every loop) and tick steps over such holes, so a time just before one plays from there,
  // a time in one from after it. Only the last half second of the newest media is refused, where
  // playback would stall.
  seekTo(t) {
    if (!this.started || this.stopped) return false;
    const b = this.sb.buffered, n = b.length, x = t - this.origin;
    for (let i = 0; i < n; i++) {
      const end = i === n - 1 ? b.end(i) - 0.5 : b.start(i + 1) - b.end(i) < SMALL_HOLE ? b.start(i + 1) : b.end(i);
      if (x < b.start(i) || x >= end) continue;
      this.live = false;
      this.seek(x < b.end(i) ? x : b.start(i + 1) + 0.001); // in the hole: after it, as tick would
      this.resume();
      return true;
    }
    return false;
  }

  // userSeek takes a seek in progress that the player did not make (seek) for the user's, made
  // with the video's own seek bar: LIVE stops following the live edge there (the live-edge rule
  // took the position for lag and jumped back at once), unless it is at the edge.
  userSeek() {
    const v = this.video, t = v.currentTime, b = this.sb?.buffered;
    if (!this.started || Math.abs(t - this.seekingTo) < 0.01 || !b?.length) return;
    this.seekingTo = t; // taken: the 'seeking' event or the next tick do not take it again
    this.lastTick = { t, at: performance.now() };
    this.live = this.liveSession && b.end(b.length - 1) - t <= LIVE_DELAY + 0.5;
    this.onSeek(this.origin + t, this.live);
  }

  // seek moves the playhead to media time t (seconds since origin) on the player's own account.
  seek(t) {
    this.seekingTo = t;
    this.lastTick = { t, at: performance.now() };
    this.video.currentTime = t;
  }

  // newest is the producer time where the media the player holds ends (0: none yet).
  newest() {
    if (!this.started || this.stopped) return 0;
    const b = this.sb.buffered;
    return b.length ? this.origin + b.end(b.length - 1) : 0;
  }

  // goLive returns a LIVE session's player to the live edge; it reports whether it could.
  goLive() {
    if (!this.liveSession || !this.started || this.stopped) return false;
    const b = this.sb.buffered;
    this.live = true;
    if (b.length) this.seek(Math.max(b.start(b.length - 1), b.end(b.length - 1) - LIVE_DELAY));
    this.resume();
    return true;
  }

  resume() {
    this.video.muted = true;
    this.video.play().then(() => { this.blocked = false; }, (e) => {
      // Autoplay refused: the controls are there for a click.
      if (e.name === 'NotAllowedError') { this.blocked = true; this.onState('press play'); }
    });
  }

  // tick steps over holes and, LIVE, keeps near the live edge.
  tick() {
    if (this.stopped || !this.started || !this.sb) return;
    // A user's seek whose 'seeking' event has not run yet (a busy page): the playhead moved
    // back, or further on than playing moves it, since the last tick, and not by seek. Taken as
    // the user's here, before the live-edge rule below takes its position for lag.
    const now = performance.now(), last = this.lastTick;
    this.lastTick = { t: this.video.currentTime, at: now };
    if (last && Math.abs(this.video.currentTime - this.seekingTo) >= 0.01) {
      const moved = this.video.currentTime - last.t;
      const played = this.video.paused ? 0 : (now - last.at) / 1000 * (this.video.playbackRate || 1);
      if (moved < -0.5 || moved > played + 1) this.userSeek();
    }
    const v = this.video, b = this.sb.buffered, t = v.currentTime;
    if (!b.length) return;
    // Stalled at the end of a range (the decoder wants frames past it), or in a hole: go to the
    // next range, if there is one yet. Also while seeking: a seek to a frame or two before a hole
    // never completes (the decoder waits for frames past the range's end).
    let inside = -1;
    for (let i = 0; i < b.length; i++) if (t >= b.start(i) - 0.001 && t <= b.end(i)) inside = i;
    const starved = inside < 0 || (v.readyState < 3 && b.end(inside) - t < 0.3);
    if (starved) {
      for (let i = 0; i < b.length; i++) {
        if (b.start(i) > t) { this.seek(b.start(i) + 0.001); break; }
      }
    }
    const end = b.end(b.length - 1);
    if (this.live && !v.paused && end - v.currentTime > LIVE_MAX_BEHIND) this.seek(Math.max(b.start(b.length - 1), end - LIVE_DELAY));
  }

  // trim keeps 30 s of media behind the playhead and, when paused for long, at most 2 minutes
  // ahead of it (the browser refuses appends past its quota): the playhead moves to 30 s before
  // the newest media.
  async trim() {
    const b = this.sb.buffered, v = this.video;
    if (!b.length || this.sb.updating) return;
    const end = b.end(b.length - 1);
    let upTo = v.currentTime - 30;
    if (v.paused && end - v.currentTime > 120) { this.seek(end - 30); upTo = end - 35; } // removal runs on to a keyframe
    if (upTo - b.start(0) <= 10) return;
    this.sb.remove(b.start(0), upTo);
    await new Promise((r) => this.sb.addEventListener('updateend', r, { once: true }));
  }

  cannotPlay(mime) {
    const url = this.hlsURL;
    this.onState(this.hevc ? 'cannot decode H.265' : 'cannot play');
    this.onNotice(this.hevc ? `This stream is H.265 (${mime}). This browser cannot decode H.265 through Media Source Extensions (Chromium builds without HEVC support cannot); use Safari, or play the HLS URL with ffplay or VLC: ${url}`
      : `This browser cannot play ${mime}.`);
    this.stop();
  }

  async fetchBytes(u) {
    const r = await fetch(u);
    if (!r.ok) throw new Error(`${u}: ${r.status}`);
    return r.arrayBuffer();
  }

  async append(buf) {
    if (this.stopped) return;
    this.sb.appendBuffer(buf);
    await new Promise((r, j) => {
      const ok = () => { this.sb.removeEventListener('error', bad); r(); };
      const bad = () => { this.sb.removeEventListener('updateend', ok); j(new Error('the browser rejected a fragment')); };
      this.sb.addEventListener('updateend', ok, { once: true });
      this.sb.addEventListener('error', bad, { once: true });
    });
  }

  // producerTime is the producer timestamp of the frame on screen (seconds), or NaN.
  producerTime() { return this.origin && this.started ? this.origin + this.video.currentTime : NaN; }

  // latency is how far the frame on screen is behind now, by the producer's clock.
  latency() { return Date.now() / 1000 - this.producerTime(); }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.watch);
    delete this.video.dataset.origin;
    if (this.onError) this.video.removeEventListener('error', this.onError);
    if (this.onWaiting) this.video.removeEventListener('waiting', this.onWaiting);
    if (this.onSeeking) this.video.removeEventListener('seeking', this.onSeeking);
    try { this.video.pause(); this.video.removeAttribute('src'); this.video.load(); } catch (_) { /* gone */ }
    if (this.objectURL) URL.revokeObjectURL(this.objectURL);
  }
}
