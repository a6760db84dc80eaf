// kvs console: plain JavaScript, no build step, no third-party code. It uses the server's own
// KVS APIs (POST, JSON) and plays video with Media Source Extensions fed by an HLS session's
// fMP4 init and media fragments (the same bytes any HLS player gets).
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmtTime = (s) => new Date(s * 1000).toISOString().replace('T', ' ').replace('Z', '');
const fmtBytes = (n) => n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;

// api calls a KVS operation and returns its JSON answer, or throws Error("Type: Message").
async function api(path, body = {}) {
  const resp = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!resp.ok) {
    let msg = `${resp.status}`;
    try { const j = await resp.json(); msg = `${j.__type}: ${j.Message}`; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp.json();
}

async function listFragments(stream, start, end) {
  const out = [];
  let token;
  do {
    const body = token ? { StreamName: stream, NextToken: token, MaxResults: 1000 }
      : { StreamName: stream, MaxResults: 1000, FragmentSelector: { FragmentSelectorType: 'PRODUCER_TIMESTAMP', TimestampRange: { StartTimestamp: start, EndTimestamp: end } } };
    const r = await api('/listFragments', body);
    out.push(...r.Fragments);
    token = r.NextToken;
  } while (token && out.length < 20000);
  out.sort((a, b) => a.ProducerTimestamp - b.ProducerTimestamp);
  return out;
}

// ---- stream list --------------------------------------------------------------------------

let stopPage = () => {};

async function streamsPage() {
  const main = $('#main');
  $('#crumb').textContent = 'Streams';
  const msg = el('p', { class: 'muted' });
  const tbody = el('tbody');
  const form = el('form', { class: 'inline', id: 'create' },
    el('input', { name: 'name', placeholder: 'new stream name', required: '', pattern: '[a-zA-Z0-9_.\\-]+' }),
    el('label', {}, 'retention (hours) ', el('input', { name: 'retention', type: 'number', min: '0', value: '24', style: 'width:6em' })),
    el('button', { class: 'primary', type: 'submit' }, 'Create stream'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('/createStream', { StreamName: form.name.value, DataRetentionInHours: Number(form.retention.value) });
      form.reset();
      refresh();
    } catch (e) { msg.textContent = e.message; msg.className = 'err'; }
  });
  main.replaceChildren(form, msg, el('table', { id: 'streams' },
    el('thead', {}, el('tr', {}, ['Stream', 'Status', 'Retention', 'Last fragment', 'Data rate (1 min)', ''].map((h) => el('th', {}, h)))), tbody));

  let alive = true;
  stopPage = () => { alive = false; };
  async function refresh() {
    let streams = [];
    try {
      let token;
      do {
        const r = await api('/listStreams', token ? { NextToken: token } : {});
        streams.push(...r.StreamInfoList);
        token = r.NextToken;
      } while (token);
    } catch (e) { msg.textContent = e.message; msg.className = 'err'; return; }
    msg.textContent = streams.length ? '' : 'No streams yet.';
    const now = Date.now() / 1000;
    const rows = await Promise.all(streams.map(async (s) => {
      let last = '—', rate = '—';
      try {
        const frags = await listFragments(s.StreamName, now - 60, now + 60);
        if (frags.length) {
          const f = frags[frags.length - 1];
          last = `${Math.max(0, now - f.ServerTimestamp).toFixed(1)} s ago`;
          rate = `${(frags.reduce((a, f) => a + f.FragmentSizeInBytes, 0) * 8 / 60 / 1000).toFixed(0)} kbit/s`;
        }
      } catch (_) { /* retention-0 streams list their live buffer; errors leave dashes */ }
      return el('tr', { 'data-stream': s.StreamName },
        el('td', {}, el('a', { href: `#/stream/${encodeURIComponent(s.StreamName)}` }, s.StreamName)),
        el('td', {}, s.Status),
        el('td', { class: 'num' }, s.DataRetentionInHours ? `${s.DataRetentionInHours} h` : 'none (live only)'),
        el('td', { class: 'num' }, last),
        el('td', { class: 'num' }, rate),
        el('td', {}, el('button', { class: 'danger', onclick: async () => {
          if (!confirm(`Delete stream ${s.StreamName} and all its media?`)) return;
          try { await api('/deleteStream', { StreamARN: s.StreamARN }); refresh(); } catch (e) { msg.textContent = e.message; msg.className = 'err'; }
        } }, 'Delete')));
    }));
    tbody.replaceChildren(...rows);
  }
  while (alive) {
    await refresh();
    for (let i = 0; i < 10 && alive; i++) await sleep(500);
  }
}

// ---- player -------------------------------------------------------------------------------

// Player plays an HLS session through MSE: it reads the master playlist for the codecs, then
// polls the media playlist and appends each new fragment (and each new init segment) to one
// SourceBuffer. Times: the fragments carry producer time since the epoch; timestampOffset moves
// the first fragment to 0, so producer time = origin + currentTime.
class Player {
  constructor(video, onNotice) { this.video = video; this.onNotice = onNotice; this.stopped = false; this.origin = 0; this.appended = 0; }

  async play(session) {
    const { HLSStreamingSessionURL: url } = await api('/getHLSStreamingSessionURL', session);
    const master = await (await fetch(url)).text();
    const codecs = /CODECS="([^"]+)"/.exec(master)?.[1];
    const media = new URL(master.split('\n').find((l) => l && !l.startsWith('#')), url);
    const mime = `video/mp4; codecs="${codecs}"`;
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      const hevc = codecs.startsWith('hvc1') || codecs.startsWith('hev1');
      this.onNotice(hevc ? `This stream is H.265 (${codecs}). This browser cannot decode H.265 through Media Source Extensions (Chromium builds without HEVC support cannot); use Safari, or play the HLS URL with ffplay or VLC: ${url}`
        : `This browser cannot play ${mime}.`);
      return;
    }
    this.ms = new MediaSource();
    this.video.src = URL.createObjectURL(this.ms);
    await new Promise((r) => this.ms.addEventListener('sourceopen', r, { once: true }));
    this.sb = this.ms.addSourceBuffer(mime);
    this.sb.mode = 'segments';
    const done = new Set();
    let init = '';
    while (!this.stopped) {
      const text = await (await fetch(media)).text();
      let map = '', pdt = 0;
      for (const line of text.split('\n')) {
        if (line.startsWith('#EXT-X-MAP:URI=')) map = new URL(line.slice(16, -1), media).href;
        else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) pdt = Date.parse(line.slice(25)) / 1000;
        else if (line && !line.startsWith('#')) {
          const seg = new URL(line, media);
          const n = seg.searchParams.get('FragmentNumber');
          if (done.has(n) || this.stopped) continue;
          if (map !== init) { await this.append(await this.fetchBytes(map)); init = map; }
          if (!this.origin && pdt) { this.origin = pdt; this.sb.timestampOffset = -pdt; }
          await this.append(await this.fetchBytes(seg));
          done.add(n);
          if (this.appended === 1) {
            this.video.currentTime = this.sb.buffered.length ? this.sb.buffered.start(0) : 0;
            this.video.play().catch(() => {});
          }
        }
      }
      if (text.includes('#EXT-X-ENDLIST')) { if (this.ms.readyState === 'open') this.ms.endOfStream(); return; }
      // Keep 30 s behind the playhead; jump to the live edge when more than 4 s behind.
      const b = this.sb.buffered;
      if (b.length && this.video.currentTime - b.start(0) > 40 && !this.sb.updating) {
        this.sb.remove(b.start(0), this.video.currentTime - 30);
        await new Promise((r) => this.sb.addEventListener('updateend', r, { once: true }));
      }
      if (b.length && b.end(b.length - 1) - this.video.currentTime > 4) this.video.currentTime = b.end(b.length - 1) - 1;
      await sleep(500);
    }
  }

  async fetchBytes(u) {
    const r = await fetch(u);
    if (!r.ok) throw new Error(`${u}: ${r.status}`);
    return r.arrayBuffer();
  }

  async append(buf) {
    if (this.stopped) return;
    this.sb.appendBuffer(buf);
    await new Promise((r, j) => { this.sb.addEventListener('updateend', r, { once: true }); this.sb.addEventListener('error', j, { once: true }); });
    this.appended++;
  }

  // latency is how far the frame on screen is behind now, by the producer's clock.
  latency() { return this.origin ? Date.now() / 1000 - (this.origin + this.video.currentTime) : NaN; }

  stop() { this.stopped = true; try { this.video.pause(); this.video.removeAttribute('src'); this.video.load(); } catch (_) { /* gone */ } }
}

// ---- stream page --------------------------------------------------------------------------

async function streamPage(name) {
  $('#crumb').textContent = `/ ${name}`;
  const main = $('#main');
  const video = el('video', { id: 'player', muted: '', playsinline: '', controls: '' });
  video.muted = true;
  const notice = el('div', { id: 'notice' });
  const stat = (id, label) => [el('span', { class: 'muted' }, label), el('span', { id, class: 'num' }, '—')];
  const stats = el('div', { class: 'stats', id: 'stats' },
    stat('st-state', 'state'), stat('st-time', 'position'), stat('st-latency', 'behind producer'),
    stat('st-frames', 'decoded frames'), stat('st-dropped', 'dropped frames'), stat('st-size', 'video size'));
  const mode = el('span', { id: 'mode', class: 'muted' }, 'live');
  const liveBtn = el('button', { onclick: () => start({ StreamName: name, PlaybackMode: 'LIVE' }, 'live') }, 'Go live');
  const timeline = el('div', { id: 'timeline', title: 'click: play from there; drag: select a range' });
  const range = el('span', { id: 'range', class: 'muted' }, 'drag on the timeline to select a range');
  const dl = el('button', { id: 'download', disabled: '' }, 'Download clip (MP4)');
  const dlMsg = el('span', { class: 'muted' });
  const fragBody = el('tbody');
  main.replaceChildren(
    el('div', { class: 'grid' },
      el('div', {}, video, notice),
      el('div', {}, el('p', {}, mode, ' ', liveBtn), stats)),
    el('h2', {}, 'Last hour'), timeline, el('form', { class: 'inline' }, range, dl, dlMsg),
    el('h2', {}, 'Fragments'),
    el('div', { class: 'scroll' }, el('table', { id: 'fragments' }, el('thead', {}, el('tr', {},
      ['Fragment number', 'Producer time', 'Server time', 'Length', 'Size'].map((h) => el('th', {}, h)))), fragBody)));

  let player = null;
  let alive = true;
  async function start(session, label) {
    if (player) player.stop();
    notice.replaceChildren();
    mode.textContent = label;
    session.HLSFragmentSelector = Object.assign({ FragmentSelectorType: 'PRODUCER_TIMESTAMP' }, session.HLSFragmentSelector || {});
    session.DisplayFragmentTimestamp = 'ALWAYS';
    session.DiscontinuityMode = 'ON_DISCONTINUITY';
    const p = new Player(video, (m) => notice.replaceChildren(el('p', { class: 'notice' }, m)));
    player = p;
    try { await p.play(session); } catch (e) { if (!p.stopped) notice.replaceChildren(el('p', { class: 'err' }, `Playback: ${e.message}`)); }
  }
  stopPage = () => { alive = false; if (player) player.stop(); };

  // Timeline: the last hour of fragments, gaps visible; click plays ON_DEMAND from that moment
  // to now, drag selects a range for GetClip.
  let span = [0, 0], sel = null;
  const xToTime = (x) => span[0] + (x / timeline.clientWidth) * (span[1] - span[0]);
  let dragFrom = null;
  timeline.addEventListener('mousedown', (ev) => { dragFrom = ev.offsetX; });
  timeline.addEventListener('mouseup', (ev) => {
    if (dragFrom === null) return;
    const a = Math.min(dragFrom, ev.offsetX), b = Math.max(dragFrom, ev.offsetX);
    dragFrom = null;
    if (b - a < 4) {
      const t = xToTime(a);
      sel = null; drawSel();
      start({ StreamName: name, PlaybackMode: 'ON_DEMAND', MaxMediaPlaylistFragmentResults: 5000,
        HLSFragmentSelector: { TimestampRange: { StartTimestamp: t - 1, EndTimestamp: Date.now() / 1000 } } }, `from ${fmtTime(t)}`);
      return;
    }
    sel = [xToTime(a), xToTime(b)];
    drawSel();
  });
  function drawSel() {
    timeline.querySelectorAll('.sel').forEach((e) => e.remove());
    dl.disabled = !sel;
    if (!sel) { range.textContent = 'drag on the timeline to select a range'; return; }
    const w = timeline.clientWidth, d = span[1] - span[0];
    timeline.append(el('div', { class: 'sel', style: `left:${(sel[0] - span[0]) / d * w}px;width:${(sel[1] - sel[0]) / d * w}px` }));
    range.textContent = `${fmtTime(sel[0])} → ${fmtTime(sel[1])} (${(sel[1] - sel[0]).toFixed(1)} s)`;
  }
  dl.addEventListener('click', async (ev) => {
    ev.preventDefault();
    if (!sel) return;
    dlMsg.textContent = 'preparing…';
    try {
      const resp = await fetch('/getClip', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ StreamName: name,
        ClipFragmentSelector: { FragmentSelectorType: 'PRODUCER_TIMESTAMP', TimestampRange: { StartTimestamp: sel[0], EndTimestamp: sel[1] } } }) });
      if (!resp.ok) { const j = await resp.json(); throw new Error(`${j.__type}: ${j.Message}`); }
      const blob = await resp.blob();
      const a = el('a', { href: URL.createObjectURL(blob), download: `${name}-${Math.floor(sel[0])}.mp4` });
      document.body.append(a); a.click(); a.remove();
      dlMsg.textContent = `${fmtBytes(blob.size)}`;
    } catch (e) { dlMsg.textContent = e.message; }
  });

  async function refreshFragments() {
    const now = Date.now() / 1000;
    span = [now - 3600, now];
    let frags;
    try { frags = await listFragments(name, span[0], span[1] + 60); } catch (e) { fragBody.replaceChildren(el('tr', {}, el('td', { class: 'err', colspan: '5' }, e.message))); return; }
    const w = timeline.clientWidth, d = span[1] - span[0];
    timeline.replaceChildren(...frags.map((f) => el('div', { class: 'frag',
      title: `${f.FragmentNumber}\n${fmtTime(f.ProducerTimestamp)}`,
      style: `left:${(f.ProducerTimestamp - span[0]) / d * w}px;width:${Math.max(1, f.FragmentLengthInMilliseconds / 1000 / d * w)}px` })));
    drawSel();
    fragBody.replaceChildren(...frags.slice(-100).reverse().map((f) => el('tr', {},
      el('td', { class: 'num' }, f.FragmentNumber), el('td', { class: 'num' }, fmtTime(f.ProducerTimestamp)),
      el('td', { class: 'num' }, fmtTime(f.ServerTimestamp)), el('td', { class: 'num' }, `${f.FragmentLengthInMilliseconds} ms`),
      el('td', { class: 'num' }, fmtBytes(f.FragmentSizeInBytes)))));
  }

  (async () => {
    while (alive) {
      const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
      $('#st-state').textContent = video.paused ? (player?.appended ? 'paused' : 'loading') : 'playing';
      $('#st-time').textContent = player?.origin ? fmtTime(player.origin + video.currentTime) : video.currentTime.toFixed(2);
      const lat = player ? player.latency() : NaN;
      $('#st-latency').textContent = Number.isFinite(lat) ? `${lat.toFixed(2)} s` : '—';
      $('#st-frames').textContent = q.totalVideoFrames ?? '—';
      $('#st-dropped').textContent = q.droppedVideoFrames ?? '—';
      $('#st-size').textContent = video.videoWidth ? `${video.videoWidth}x${video.videoHeight}` : '—';
      await sleep(250);
    }
  })();
  (async () => { while (alive) { await refreshFragments(); for (let i = 0; i < 10 && alive; i++) await sleep(500); } })();
  start({ StreamName: name, PlaybackMode: 'LIVE' }, 'live');
}

// ---- routing ------------------------------------------------------------------------------

function route() {
  stopPage();
  stopPage = () => {};
  const m = /^#\/stream\/(.+)$/.exec(location.hash);
  if (m) streamPage(decodeURIComponent(m[1]));
  else streamsPage();
}
window.addEventListener('hashchange', route);
route();
