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
// Times are UTC, and say so (a user compares them with their own clock).
const fmtTime = (s) => new Date(s * 1000).toISOString().replace('T', ' ').replace('Z', ' UTC');
// dateTime is fmtTime with the date in its own span, which a phone hides.
const dateTime = (s) => { const [d, t] = fmtTime(s).split(' '); return [el('span', { class: 'date' }, `${d} `), t]; };
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

// listFragments lists stream's fragments of [start, end] by PRODUCER_TIMESTAMP or, with by
// 'SERVER_TIMESTAMP', by when the server received them; in producer time order.
async function listFragments(stream, start, end, by = 'PRODUCER_TIMESTAMP') {
  const out = [];
  let token;
  do {
    const body = token ? { StreamName: stream, NextToken: token, MaxResults: 1000 }
      : { StreamName: stream, MaxResults: 1000, FragmentSelector: { FragmentSelectorType: by, TimestampRange: { StartTimestamp: start, EndTimestamp: end } } };
    const r = await api('/listFragments', body);
    out.push(...r.Fragments);
    token = r.NextToken;
  } while (token && out.length < 20000);
  out.sort((a, b) => a.ProducerTimestamp - b.ProducerTimestamp);
  return out;
}

// image returns a data: URL of the picture at producer time t (seconds), HeightPixels high
// (the width follows the video's aspect ratio), or null when GetImages has none there.
async function image(stream, t, height) {
  const r = await api('/getImages', { StreamName: stream, ImageSelectorType: 'PRODUCER_TIMESTAMP', StartTimestamp: t, EndTimestamp: t,
    Format: 'JPEG', FormatConfig: { JPEGQuality: '70' }, HeightPixels: height });
  return r.Images?.[0]?.ImageContent ? `data:image/jpeg;base64,${r.Images[0].ImageContent}` : null;
}

// imageWhenFree is image for pages that ask for many pictures (the stream list, the timeline's
// thumbnails): at most 2 requests in flight, and one the server turns away because it is serving
// as many GetImages as it will (ClientLimitExceededException) is asked again after a pause, for
// as long as wanted() says the picture is still wanted (its page is open and it is not stale).
// It rejects with "unwanted" once it is not.
let imagesBusy = 0;
const imageWaiters = [];
async function imageWhenFree(stream, t, height, wanted) {
  while (imagesBusy >= 2) await new Promise((r) => imageWaiters.push(r));
  imagesBusy++;
  try {
    for (let i = 1; wanted(); i++) {
      try { return await image(stream, t, height); } catch (e) {
        if (!/^ClientLimitExceeded/.test(e.message)) throw e;
        await sleep(Math.min(250 * i, 2000));
      }
    }
    throw new Error('unwanted');
  } finally {
    imagesBusy--;
    imageWaiters.shift()?.();
  }
}

// liveEvents follows the server's events (GET /events, Server-Sent Events; query: ?stream=,
// ?fragments=1) and calls onEvent with each one; resync runs when the stream (re)opens, since
// events that happened while it was down are not sent again. The console updates from these
// instead of polling. EventSource reconnects by itself only after a network error: an HTTP error
// (a proxy's 502 while kvs restarts) closes it for good, so then a new one is opened, after a
// pause that grows to 30 s. It returns { close }. window.kvsEvents keeps the last events seen and
// the current EventSource, for a look in the devtools; opens counts its connections, lists the
// stream list's full refreshes started, listed those whose streams are all listed (the browser
// tests read them).
window.kvsEvents = { received: [], opens: 0, lists: 0, listed: 0 };
function liveEvents(query, onEvent, resync) {
  let opened = false, closed = false, source = null, timer = null, pause = 1000;
  const connect = () => {
    source = window.kvsEvents.source = new EventSource(`/events${query}`);
    source.addEventListener('open', () => { window.kvsEvents.opens++; pause = 1000; if (opened) resync(); opened = true; });
    source.addEventListener('error', () => {
      if (closed || source.readyState !== EventSource.CLOSED) return;
      timer = setTimeout(connect, pause);
      pause = Math.min(pause * 2, 30000);
    });
    source.addEventListener('message', (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      const seen = window.kvsEvents.received;
      seen.push(`${ev.type} ${ev.stream}`);
      if (seen.length > 50) seen.shift();
      onEvent(ev);
    });
  };
  connect();
  return { close() { closed = true; clearTimeout(timer); source.close(); } };
}

// streamGone says whether an API error means the stream does not exist (never did, or was deleted).
const streamGone = (e) => /^ResourceNotFound.*stream is not found/.test(e.message);

// debounce returns a function that runs fn once, ms after its first call since the last run.
function debounce(fn, ms) {
  let timer = null;
  return () => { if (!timer) timer = setTimeout(() => { timer = null; fn(); }, ms); };
}

// ---- stream list --------------------------------------------------------------------------

const latestImages = new Map(); // stream → { n: fragment number, url }: asked for again only for a new fragment

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
  const nodes = el('section', { id: 'nodes', class: 'muted' });
  main.replaceChildren(form, msg, el('div', { class: 'scroll-x' }, el('table', { id: 'streams' },
    el('thead', {}, el('tr', {}, ['Stream', 'Status', 'Retention', 'Last fragment', 'Data rate (1 min)', 'Latest image', ''].map((h) => el('th', {}, h)))), tbody)), nodes);

  let alive = true, byName = new Map(); // the streams last listed, by name
  const listings = { started: 0, shown: 0 }; // refresh's listings: the last started, the one on screen
  const later = new Map(); // stream → its row's debounced refreshRow (below)
  // Pictures are asked for only for rows on screen (each one is a decode on the server, and a
  // list may have hundreds of streams): wanted holds, per stream, the picture its row waits for,
  // newest last; a row that comes on screen has its picture asked for then, the newest wanted
  // first, two at a time; one that goes off screen before its turn keeps waiting here.
  const wanted = new Map(); // stream → { li, t: producer time }
  const onScreen = new Set(); // streams whose row is on screen
  let picsBusy = 0;
  const seen = new IntersectionObserver((es) => {
    for (const e of es) if (e.isIntersecting) onScreen.add(e.target.dataset.stream); else onScreen.delete(e.target.dataset.stream);
    pumpPictures();
  });
  const pic = (name, li) => el('img', { class: 'thumb', src: li.url, alt: `${name} at ${fmtTime(li.t)}`, title: fmtTime(li.t) });
  function pumpPictures() {
    for (let name; alive && picsBusy < 2 && (name = [...wanted.keys()].findLast((n) => onScreen.has(n))) !== undefined; picsBusy++) {
      const w = wanted.get(name);
      wanted.delete(name);
      const current = () => alive && latestImages.get(name) === w.li;
      imageWhenFree(name, w.t, 40, () => current() && onScreen.has(name)).then((url) => {
        if (!url) return;
        w.li.url = url;
        w.li.t = w.t;
        // A newer fragment's picture, asked for later but back sooner, may be in the row already.
        if (!current()) return;
        tbody.querySelector(`tr[data-stream="${CSS.escape(name)}"] .pic`)?.replaceChildren(pic(name, w.li));
      }, (e) => {
        // Scrolled off screen while the server was busy: asked again when it is back.
        if (e.message === 'unwanted' && current() && !wanted.has(name)) wanted.set(name, w);
      }).finally(() => { picsBusy--; pumpPictures(); });
    }
  }
  // showPicture puts its stream's latest picture in row tr when the row has another: one that
  // came while tr's listing was being built (it waits for every stream's ListFragments) went
  // into the row on screen then, not into tr, built before it came.
  function showPicture(tr) {
    const name = tr.dataset.stream, li = latestImages.get(name), img = tr.querySelector('.pic img');
    if (li?.url && (img?.getAttribute('src') !== li.url || img.title !== fmtTime(li.t))) tr.querySelector('.pic')?.replaceChildren(pic(name, li));
  }
  // row builds the row of stream s: its last fragment and data rate of the last minute (ListFragments),
  // and its latest picture, which fills its cell when it comes.
  async function row(s) {
    let last = '—', rate = '—', thumb = '—';
    const now = Date.now() / 1000;
    try {
      // By server time: the row says when the server last received a fragment and the data
      // rate of the last minute, whatever the producer's clock says.
      const frags = await listFragments(s.StreamName, now - 60, now + 60, 'SERVER_TIMESTAMP');
      if (frags.length) {
        const f = frags.reduce((a, b) => (b.ServerTimestamp > a.ServerTimestamp ? b : a));
        last = el('span', { class: 'ago', 'data-t': f.ServerTimestamp }, ago(f.ServerTimestamp));
        rate = `${(frags.reduce((a, f) => a + f.FragmentSizeInBytes, 0) * 8 / 60 / 1000).toFixed(0)} kbit/s`;
        const prev = latestImages.get(s.StreamName);
        // Only a stream the latest listing has keeps a picture: a row of an older listing or
        // refresh, finishing after the stream was deleted, would put it back after that listing
        // dropped what deleted streams kept.
        if (s.DataRetentionInHours && prev?.n !== f.FragmentNumber && byName.has(s.StreamName)) {
          // The row shows at once, with the picture before (if any); the new one fills its cell
          // when it comes, once the row is on screen (pumpPictures; a busy server may take a
          // while: imageWhenFree). No picture there: the dash or the one before stays.
          const li = { n: f.FragmentNumber, url: prev?.url, t: prev?.t };
          latestImages.set(s.StreamName, li);
          wanted.delete(s.StreamName);
          wanted.set(s.StreamName, { li, t: f.ProducerTimestamp });
          pumpPictures(); // its row before may be on screen (a listing not shown is observed by none)
        }
        const li = latestImages.get(s.StreamName);
        if (li?.url) thumb = pic(s.StreamName, li);
      }
    } catch (_) { /* retention-0 streams list their live buffer; errors leave dashes */ }
    // The picture's box keeps its height before the picture comes: rows that grew as their
    // pictures came would move others on and off screen.
    const latest = el('td', { class: 'latest', 'data-label': 'latest image' }, el('div', { class: 'pic' }, thumb));
    // data-label names each cell where a phone shows the rows as cards, without the header.
    return el('tr', { 'data-stream': s.StreamName },
      el('td', { class: 'name' }, el('a', { href: `#/stream/${encodeURIComponent(s.StreamName)}` }, s.StreamName)),
      el('td', { 'data-label': 'status' }, s.Status),
      el('td', { class: 'num', 'data-label': 'retention' }, s.DataRetentionInHours ? `${s.DataRetentionInHours} h` : 'none (live only)'),
      el('td', { class: 'num', 'data-label': 'last fragment' }, last),
      el('td', { class: 'num', 'data-label': 'data rate' }, rate),
      latest,
      el('td', { class: 'actions' }, el('button', { class: 'danger', onclick: async () => {
        if (!confirm(`Delete stream ${s.StreamName} and all its media?`)) return;
        try { await api('/deleteStream', { StreamARN: s.StreamARN }); refresh(); } catch (e) { msg.textContent = e.message; msg.className = 'err'; }
      } }, 'Delete')));
  }

  async function refresh() {
    window.kvsEvents.lists++;
    let streams = [];
    try {
      let token;
      do {
        const r = await api('/listStreams', token ? { NextToken: token } : {});
        streams.push(...r.StreamInfoList);
        token = r.NextToken;
      } while (token);
    } catch (e) { msg.textContent = e.message; msg.className = 'err'; window.kvsEvents.listed++; return; }
    msg.textContent = streams.length ? '' : 'No streams yet.';
    const seq = ++listings.started;
    byName = new Map(streams.map((s) => [s.StreamName, s]));
    const rows = await Promise.all(streams.map(row));
    window.kvsEvents.listed++;
    // A listing that finishes after a newer one is on screen puts back nothing (a deleted
    // stream's row); one that a newer listing merely started after still goes in, so that
    // listings started one after another (a busy list) never leave it empty.
    if (!alive || seq < listings.shown) return; // left (its maps dropped), or put back nothing
    listings.shown = seq;
    for (const tr of tbody.rows) seen.unobserve(tr);
    tbody.replaceChildren(...rows);
    for (const tr of rows) { showPicture(tr); seen.observe(tr); }
    // What is kept per stream goes with the stream (once its row is gone: until then its
    // fragments' events and its row may add to it): a list left open for weeks sees streams come
    // and go, and kept a picture, a debounced refresh and a session for every one ever listed.
    for (const m of [latestImages, later, liveSessions, wanted, onScreen]) for (const n of m.keys()) if (!byName.has(n)) m.delete(n);
    // The cluster's nodes and the streams each writes (one node, this one, when not clustered).
    try {
      const c = await api('/kvs/describeCluster');
      nodes.replaceChildren(el('h3', {}, c.Nodes.length > 1 ? `Cluster: ${c.Nodes.length} nodes` : 'Node'),
        el('ul', {}, ...c.Nodes.map((n) => el('li', { 'data-node': n.Url }, el('code', {}, n.Url), n.Self ? ' (this node)' : '',
          n.Streams.length ? ` writes ${n.Streams.join(', ')}` : ' writes no stream now'))));
    } catch (_) { nodes.replaceChildren(); }
  }
  // refreshRow builds stream name's row again, in place.
  async function refreshRow(name) {
    const s = byName.get(name);
    if (!s || !alive) return;
    const tr = await row(s), old = tbody.querySelector(`tr[data-stream="${CSS.escape(name)}"]`);
    if (!alive || !byName.has(name) || !old) return;
    seen.unobserve(old);
    old.replaceWith(tr);
    seen.observe(tr);
  }
  // Updates come from the server's events: a stream created, deleted or starting or ending an
  // upload lists again at once; a fragment moves its row's "last fragment" at once and builds
  // that row again (data rate, picture) within 5 s, not the whole list (hundreds of streams, a
  // few live). Between them, the "… s ago" count goes on by itself.
  const soon = debounce(() => { if (alive) refresh(); }, 100);
  const events = liveEvents('?fragments=1', (ev) => {
    if (ev.type !== 'fragment.persisted') { soon(); return; }
    const cell = tbody.querySelector(`tr[data-stream="${CSS.escape(ev.stream)}"] .ago`);
    if (cell && ev.server_time) cell.dataset.t = Date.parse(ev.server_time) / 1000;
    if (!cell) { soon(); return; }
    if (!later.has(ev.stream)) later.set(ev.stream, debounce(() => refreshRow(ev.stream), 5000));
    later.get(ev.stream)();
  }, soon);
  stopPage = () => { alive = false; events.close(); seen.disconnect(); later.clear(); wanted.clear(); byName = new Map(); }; // pending image requests may hold this page a while
  refresh();
  while (alive) {
    for (const c of tbody.querySelectorAll('.ago')) c.textContent = ago(Number(c.dataset.t));
    await sleep(500);
  }
}

const ago = (t) => `${Math.max(0, Date.now() / 1000 - t).toFixed(1)} s ago`;

// ---- stream page --------------------------------------------------------------------------

const fmtSpan = (s) => s >= 3600 ? `${(s / 3600).toFixed(s % 3600 ? 1 : 0)} h` : s >= 120 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`;

async function streamPage(name) {
  $('#crumb').replaceChildren(el('a', { href: '#/' }, 'Streams'), ` / ${name}`);
  const main = $('#main');
  const video = el('video', { id: 'player', muted: '', playsinline: '', controls: '' });
  video.muted = true;
  const notice = el('div', { id: 'notice' });
  const cells = {};
  const stat = (id, label) => [el('span', { class: 'muted' }, label), cells[id] = el('span', { id, class: 'num' }, '—')];
  const stats = el('div', { class: 'stats', id: 'stats' },
    stat('st-state', 'state'), stat('st-time', 'position'), stat('st-latency', 'behind producer'),
    stat('st-frames', 'decoded frames'), stat('st-dropped', 'dropped frames'), stat('st-size', 'video size'));
  const mode = el('span', { id: 'mode', class: 'badge' }, 'live');
  const liveBtn = el('button', { id: 'golive', onclick: () => goLive() }, 'Go live');
  const timeline = el('div', { id: 'timeline', title: 'click: play from there; drag: select a range' });
  const thumbs = el('div', { id: 'thumbs', title: 'click a picture: play from there' });
  const playhead = el('div', { class: 'playhead' });
  const tlTitle = el('h2', {}, 'Timeline');
  const axis = el('div', { class: 'axis muted' }, el('span', { id: 'tl-start' }, ''), el('span', {}, 'now'));
  const range = el('span', { id: 'range', class: 'muted' }, 'drag on the timeline to select a range');
  const dl = el('button', { id: 'download', disabled: '' }, 'Download clip (MP4)');
  const dlMsg = el('span', { class: 'muted' });
  const fragBody = el('tbody');
  main.replaceChildren(
    el('div', { class: 'grid' },
      el('div', {}, video, notice),
      el('div', {}, el('p', { class: 'modeline' }, mode, liveBtn), stats)),
    tlTitle, thumbs, timeline, axis, el('form', { class: 'inline' }, range, dl, dlMsg),
    el('h2', {}, 'Fragments'),
    el('div', { class: 'scroll' }, el('table', { id: 'fragments' }, el('thead', {}, el('tr', {},
      ['Fragment number', 'Producer time (UTC)', 'Server time (UTC)', 'Length', 'Size'].map((h, i) => el('th', { class: `c${i}` }, h)))), fragBody)));

  let player = null;
  let alive = true;
  let playerState = '';
  // start plays a new session; startAt (producer seconds) is where a replay starts.
  async function start(session, label, startAt) {
    if (player) player.stop();
    notice.replaceChildren();
    video.hidden = false;
    setMode(label, session.PlaybackMode === 'LIVE', startAt);
    session.HLSFragmentSelector = Object.assign({ FragmentSelectorType: 'PRODUCER_TIMESTAMP' }, session.HLSFragmentSelector || {});
    session.DisplayFragmentTimestamp = 'ALWAYS';
    session.DiscontinuityMode = 'ON_DISCONTINUITY';
    playerState = '';
    // A stream the browser cannot decode gets the notice in place of the (black) video.
    const p = new Player(video, (m) => { video.hidden = true; notice.replaceChildren(el('p', { class: 'notice' }, m)); }, (s) => { playerState = s; },
      (t, live) => { if (live) setMode('live', true); else setMode(`replay from ${fmtTime(t).slice(11, 19)}`, false, t); });
    player = p;
    try { await p.play(session, startAt); } catch (e) {
      if (p.stopped) return;
      if (streamGone(e)) gone(`Stream ${name} does not exist (${e.message}).`);
      else { notice.replaceChildren(el('p', { class: 'err' }, `Playback: ${e.message}`)); playerState = 'stopped'; }
    }
  }
  stopPage = () => { alive = false; if (player) player.stop(); };
  function setMode(label, live, t) {
    mode.textContent = label;
    mode.classList.toggle('live', live);
    mode.dataset.t = t ?? '';
  }
  // goLive and replayFrom reuse the current session when it has what they need: sessions are
  // limited (10 per stream, each for its Expires).
  function goLive() {
    if (player && player.goLive()) { setMode('live', true); return; }
    start({ StreamName: name, PlaybackMode: 'LIVE' }, 'live');
  }
  // A click within LIVE_DELAY of the newest media goes live. The newest media is the player's
  // when it has more recent media than the timeline, which is read only every few seconds.
  function replayFrom(t) {
    const newest = Math.max(last, player ? player.newest() : 0);
    if (!newest || t >= newest - LIVE_DELAY) { goLive(); return; }
    const from = Math.max(t, first), label = `replay from ${fmtTime(from).slice(11, 19)}`;
    if (player && player.seekTo(from)) { setMode(label, false, from); return; }
    // LIVE_REPLAY lists the fragments that start at or after StartTimestamp: start at the one that
    // holds `from`, however long it is.
    const f = fragList.findLast((f) => f.ProducerTimestamp <= from);
    const at = f && from < f.ProducerTimestamp + f.FragmentLengthInMilliseconds / 1000 ? Math.min(from - 3, f.ProducerTimestamp - 0.001) : from - 3;
    start({ StreamName: name, PlaybackMode: 'LIVE_REPLAY', MaxMediaPlaylistFragmentResults: 10,
      HLSFragmentSelector: { TimestampRange: { StartTimestamp: at } } }, label, from);
  }

  // Timeline: the last hour of fragments (or less, when the stream is younger), gaps visible;
  // a click plays from that moment on (LIVE_REPLAY: it continues into live), a drag selects a
  // range for GetClip. Its span follows now, except while the pointer is over it: the time under
  // the pointer stays put while the user aims.
  let span = [Date.now() / 1000 - 60, Date.now() / 1000], sel = null, first = 0, last = 0, aiming = false, runs = [], fragList = [];
  const pct = (t) => `${((t - span[0]) / (span[1] - span[0]) * 100).toFixed(3)}%`;
  const xToTime = (clientX) => {
    const r = timeline.getBoundingClientRect();
    return span[0] + Math.min(1, Math.max(0, (clientX - r.left) / r.width)) * (span[1] - span[0]);
  };
  let dragFrom = null;
  timeline.addEventListener('pointerdown', (ev) => { dragFrom = ev.clientX; timeline.setPointerCapture(ev.pointerId); });
  timeline.addEventListener('pointerup', (ev) => {
    if (dragFrom === null) return;
    const a = Math.min(dragFrom, ev.clientX), b = Math.max(dragFrom, ev.clientX);
    dragFrom = null;
    if (b - a < 4) {
      sel = null; drawSel();
      replayFrom(xToTime(ev.clientX));
      return;
    }
    sel = [xToTime(a), xToTime(b)];
    drawSel();
  });
  timeline.addEventListener('pointercancel', () => { dragFrom = null; });
  timeline.addEventListener('pointerenter', () => { aiming = true; });
  timeline.addEventListener('pointerleave', () => { aiming = false; });
  function drawSel() {
    timeline.querySelectorAll('.sel').forEach((e) => e.remove());
    dl.disabled = !sel;
    if (!sel) { range.textContent = 'drag on the timeline to select a range'; return; }
    timeline.append(el('div', { class: 'sel', style: `left:${pct(sel[0])};width:calc(${pct(sel[1])} - ${pct(sel[0])})` }));
    range.textContent = `${fmtTime(sel[0])} → ${fmtTime(sel[1]).slice(11)} (${(sel[1] - sel[0]).toFixed(1)} s)`;
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
      // The object URL holds the clip's bytes for as long as the page is open: free them once the
      // download has them (some browsers read the Blob after click returns, so not at once).
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      dlMsg.textContent = `${fmtBytes(blob.size)}`;
    } catch (e) { dlMsg.textContent = e.message; }
  });

  async function refreshFragments() {
    const now = Date.now() / 1000;
    let frags;
    // The last hour of media the server received, drawn in producer time: a producer's clock may
    // be off (by hours, a camera set to local time), and then "now" on the timeline is now by its
    // clock, where the fragment received last says it is.
    try { frags = await listFragments(name, now - 3600, now + 60, 'SERVER_TIMESTAMP'); } catch (e) { fragBody.replaceChildren(el('tr', {}, el('td', { class: 'err', colspan: '5' }, e.message))); return; }
    fragList = frags;
    first = frags.length ? frags[0].ProducerTimestamp : 0;
    last = frags.length ? frags[frags.length - 1].ProducerTimestamp + frags[frags.length - 1].FragmentLengthInMilliseconds / 1000 : 0;
    let pnow = now;
    if (frags.length) {
      const f = frags.reduce((a, b) => (b.ServerTimestamp > a.ServerTimestamp ? b : a));
      const off = f.ProducerTimestamp - f.ServerTimestamp;
      if (Math.abs(off) > 60) pnow = now + off;
    }
    if (!aiming) {
      const from = first ? Math.max(pnow - 3600, Math.min(pnow - 60, first - (pnow - first) * 0.05)) : pnow - 60;
      span = [from, Math.max(pnow, last)];
      timeline.dataset.from = span[0].toFixed(3);
      timeline.dataset.to = span[1].toFixed(3);
      tlTitle.textContent = `Timeline: last ${fmtSpan(pnow - from)}`;
      $('#tl-start', axis).textContent = `${fmtTime(from).slice(0, 19)} UTC`;
    }
    // Fragments that touch (holes under SMALL_HOLE) are drawn as one run.
    runs = [];
    for (const f of frags) {
      const a = f.ProducerTimestamp, b = a + f.FragmentLengthInMilliseconds / 1000;
      const r = runs[runs.length - 1];
      if (r && a - r[1] < SMALL_HOLE) { r[1] = Math.max(r[1], b); r[2]++; } else runs.push([a, b, 1]);
    }
    timeline.replaceChildren(...runs.map(([a, b, n]) => el('div', { class: 'frag',
      title: `${fmtTime(a)} → ${fmtTime(b).slice(11)}, ${n} fragment${n > 1 ? 's' : ''}`,
      style: `left:${pct(a)};width:max(1px, calc(${pct(b)} - ${pct(a)}))` })), playhead);
    drawSel();
    drawThumbs();
    fragBody.replaceChildren(...frags.slice(-100).reverse().map((f) => el('tr', {},
      el('td', { class: 'num c0', title: f.FragmentNumber }, el('span', {}, f.FragmentNumber)), el('td', { class: 'num c1' }, dateTime(f.ProducerTimestamp)),
      el('td', { class: 'num c2' }, dateTime(f.ServerTimestamp)), el('td', { class: 'num c3' }, `${f.FragmentLengthInMilliseconds} ms`),
      el('td', { class: 'num c4' }, fmtBytes(f.FragmentSizeInBytes)))));
  }

  // Thumbnails over the timeline: a picture every `step` s of stored media, on round times (they stay put
  // as the span follows now); one GetImages call each while the strip is on screen, two at a time, kept.
  const THUMB_H = 54, STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const thumbCache = new Map(), thumbRetry = new Map(); // slot time → data: URL or null; → when to ask again
  let thumbWant = [], thumbBusy = 0, thumbVisible = false, thumbW = THUMB_H * 16 / 9, thumbsOff = false;
  new IntersectionObserver((es) => { thumbVisible = es.some((e) => e.isIntersecting); pumpThumbs(); }).observe(thumbs);
  thumbs.addEventListener('click', (ev) => { if (ev.target.dataset.t) replayFrom(Number(ev.target.dataset.t)); });
  function drawThumbs() {
    if ((thumbs.hidden = thumbsOff)) return; // a stream that keeps no data, or a server that cannot decode it
    thumbW = thumbs.querySelector('img')?.naturalWidth || thumbW; // the stream's aspect ratio, once a picture is in
    const n = Math.max(1, Math.floor((thumbs.clientWidth || 600) / (thumbW + 8)));
    const step = STEPS.find((s) => s >= (span[1] - span[0]) / n) || 7200;
    const kids = [], want = [], slots = new Set();
    for (let t = Math.ceil(span[0] / step) * step; t <= span[1]; t += step) {
      if (!runs.some(([a, b]) => t >= a && t <= b)) continue;
      slots.add(t);
      if (!thumbCache.has(t)) { if (!(thumbRetry.get(t) > Date.now())) want.push(t); continue; }
      if (thumbCache.get(t)) kids.push(el('img', { class: 'thumb', src: thumbCache.get(t), alt: fmtTime(t), title: fmtTime(t), 'data-t': t, style: `left:${pct(t)}` }));
    }
    thumbs.replaceChildren(...kids);
    // Only the slots drawn now keep their pictures: slots move on with now and their step grows
    // with the span (10 s at a minute, 600 s at an hour), so a page left open for weeks kept
    // every picture it ever drew.
    for (const m of [thumbCache, thumbRetry]) for (const t of m.keys()) if (!slots.has(t)) m.delete(t);
    thumbWant = want.reverse(); // newest first
    pumpThumbs();
  }
  function pumpThumbs() {
    for (let t; alive && thumbVisible && thumbBusy < 2 && (t = thumbWant.shift()) !== undefined; thumbBusy++) {
      imageWhenFree(name, t, THUMB_H, () => alive && thumbVisible).then((url) => thumbCache.set(t, url), (e) => {
        if (/^(NoDataRetention|UnsupportedStreamMediaType)/.test(e.message)) thumbsOff = true; else thumbRetry.set(t, Date.now() + 10000);
      }).finally(() => { thumbBusy--; if (alive) drawThumbs(); });
    }
  }

  function showStats() {
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
    const pt = player ? player.producerTime() : NaN;
    cells['st-state'].textContent = player?.blocked ? 'press play' : playerState && video.paused ? playerState
      : video.paused ? (player?.started ? 'paused' : 'loading') : video.readyState < 3 ? 'buffering' : 'playing';
    cells['st-time'].textContent = Number.isFinite(pt) ? fmtTime(pt) : '—';
    cells['st-time'].dataset.t = Number.isFinite(pt) ? pt.toFixed(3) : '';
    const lat = player ? player.latency() : NaN;
    cells['st-latency'].textContent = Number.isFinite(lat) ? `${lat.toFixed(2)} s` : '—';
    cells['st-frames'].textContent = q.totalVideoFrames ?? '—';
    cells['st-dropped'].textContent = q.droppedVideoFrames ?? '—';
    cells['st-size'].textContent = video.videoWidth ? `${video.videoWidth}x${video.videoHeight}` : '—';
    playhead.style.display = Number.isFinite(pt) ? '' : 'none';
    if (Number.isFinite(pt)) playhead.style.left = pct(Math.min(span[1], Math.max(span[0], pt)));
  }
  video.addEventListener('seeking', showStats);
  (async () => { while (alive) { showStats(); await sleep(250); } })();
  // The fragment list and the timeline follow this stream's events (a new fragment, an upload
  // starting or ending); with none, they still move with the clock every 30 s.
  const soon = debounce(() => { if (alive) refreshFragments(); }, 1000);
  const events = liveEvents(`?fragments=1&stream=${encodeURIComponent(name)}`,
    (ev) => { if (ev.type === 'stream.deleted') gone(`Stream ${name} was deleted.`); else soon(); }, soon);
  const stopPlayer = stopPage;
  stopPage = () => { stopPlayer(); events.close(); };
  // gone ends the page of a stream that no longer exists: nothing more to play or list, so
  // nothing more is asked of the server.
  function gone(why) {
    stopPage();
    video.hidden = true;
    notice.replaceChildren(el('p', { class: 'err' }, why, ' ', el('a', { href: '#/' }, 'Back to the streams')));
    cells['st-state'].textContent = 'deleted';
  }
  (async () => { while (alive) { await refreshFragments(); for (let i = 0; i < 60 && alive; i++) await sleep(500); } })();
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
