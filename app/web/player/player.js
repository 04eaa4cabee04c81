// The roi-relay web player: WHEP first (lowest delay), HTTP-FLV over MSE or HLS as
// fallbacks; region overlay, danmaku kept off the regions, background blur outside them.
//
// URL: /play/{app}/{stream}?transport=auto|whep|flv|hls&regions=1&danmaku=1&blur=1
//      /play/vod/{recording id}: a recording (MP4) with its regions from the ROI sidecar
//      &roi=ws (WHEP: regions from the WebSocket feed instead of the data channel)
//      &demo=1 (sample comments) &color=ffffff (comment colour) &shadow=0

import { DanmakuLayer, applyClip, regionClip } from "./danmaku.js";
import { startFlv } from "./flv-mse.js";
import { RegionTrack, RtpClock, parseRoi } from "./regions.js";
import { startWhep } from "./whep.js";

const params = new URLSearchParams(location.search);
const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
const [appName, streamName] = parts.slice(1, 3);
const base = `/${encodeURIComponent(appName)}/${encodeURIComponent(streamName)}`;
const vod = appName === "vod";
// The page's query (txSecret/txTime for signed playback, anything an auth hook checks) goes
// to every transport URL as it is.
const query = location.search;

const $ = (id) => document.getElementById(id);
const video = $("video");
const stage = $("stage");
const overlay = $("overlay");
const blurLayer = $("blur");
const danmakuLayer = $("danmaku");

const flag = (name, fallback) => (params.has(name) ? params.get(name) !== "0" : fallback);
const colour = /^[0-9a-f]{6}$/i.test(params.get("color") || "") ? `#${params.get("color")}` : "#ffffff";

// What the page is doing, for people (the info line) and for tests (window.roiPlayer).
const state = {
  app: appName,
  stream: streamName,
  transport: null,
  status: "starting",
  error: null,
  frames: 0,
  pts: null,
  doc: null,
  boxes: [],
  roiMessages: 0,
  waiting: null, // while waiting: "not-live", "ended", "refused", "unreachable" or "error"
  regionSource: null,
  aligned: false,
  comments: 0,
};
window.roiPlayer = state;

const regions = new RegionTrack();
let clock = null; // RtpClock while on WHEP
let session = null;
let roiSocket = null;
let frameOf = () => null;
let slackMs = 0;

const danmaku = new DanmakuLayer(danmakuLayer, { color: colour, shadow: flag("shadow", true) });

function setStatus(text) {
  state.status = text;
  $("status").textContent = text;
}

function addRoi(text, source, pts) {
  const doc = parseRoi(text);
  if (!doc) return null;
  state.regionSource = source;
  if (pts !== undefined) doc.pts = pts;
  regions.add(doc);
  state.roiMessages++;
  return doc;
}

// --- transports ---------------------------------------------------------------------

// A transport whose attempt was superseded while it connected closes what it opened.
function stillMine(mine, opened) {
  if (mine === attempt) return opened;
  opened.close();
  throw new Error("superseded");
}

async function playWhep(mine) {
  clock = new RtpClock();
  const onRoi = (source) => (text, arrival) => {
    const doc = addRoi(text, source);
    if (doc && clock) clock.message(doc.pts, arrival);
  };
  const overChannel = params.get("roi") !== "ws";
  session = stillMine(
    mine,
    await startWhep(`${base}/whep${query}`, {
      onRoi: onRoi("channel"),
      dataChannel: overChannel,
      onState: (s) => {
        if ((s === "failed" || s === "closed") && mine === attempt) fail(new Error(`WebRTC ${s}`));
      },
    }),
  );
  video.srcObject = session.media;
  // RTP timestamps name the frame; without them (older browsers) the newest regions are used.
  frameOf = (meta) =>
    meta.rtpTimestamp === undefined ? null : clock.frame(meta.rtpTimestamp, meta.receiveTime);
  if (!overChannel) openRoiSocket(onRoi("ws"));
  await firstFrame(8000);
  // Regions come on the data channel; should it carry nothing (a channel blocked on the
  // way), the WebSocket feed brings the same JSON at the same moments.
  const current = session;
  setTimeout(() => {
    if (session === current && !roiSocket && state.roiMessages === 0) openRoiSocket(onRoi("ws"));
  }, 3000);
}

async function playFlv(mine) {
  session = stillMine(
    mine,
    await startFlv(`${base}.flv${query}`, video, {
      onRoi: (text, pts) => addRoi(text, "sei", pts),
      onError: (err) => mine === attempt && fail(err),
    }),
  );
  frameOf = (meta) => Math.round(meta.mediaTime * 1000);
  await firstFrame(8000);
}

async function playHls() {
  if (!video.canPlayType("application/vnd.apple.mpegurl")) {
    throw new Error("this browser has no native HLS");
  }
  openRoiSocket((text) => addRoi(text, "ws"));
  video.src = `${base}.m3u8${query}`;
  session = { close() {} };
  // Segments keep the relay's timeline: media time is the frame's pts, give or take the
  // few ms by which Chrome's HLS pipeline shifts it.
  frameOf = (meta) => Math.round(meta.mediaTime * 1000);
  slackMs = 20;
  await firstFrame(20000);
}

// A recording: the MP4 in the <video> element, every frame's regions from the JSON-lines
// sidecar; a line's "t" is the frame's media time in ms (README, Recording).
async function playVod() {
  const id = encodeURIComponent(streamName);
  const reply = await fetch(`/vod/${id}/regions.jsonl${query}`);
  if (!reply.ok) throw new Error(`no such recording (${reply.status})`);
  regions.limit = Infinity; // a whole segment, not a live window
  for (const line of (await reply.text()).split("\n")) {
    if (!line) continue;
    const doc = JSON.parse(line);
    // A frame without ROI metadata still replaces the previous frame's regions.
    if (!(doc.w > 0 && doc.h > 0)) Object.assign(doc, { w: 1, h: 1 });
    addRoi(JSON.stringify(doc), "sidecar", doc.t);
  }
  video.src = `/vod/${id}/media${query}`;
  session = { close() {} };
  frameOf = (meta) => Math.round(meta.mediaTime * 1000);
  await firstFrame(20000);
}

function openRoiSocket(onRoi) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  roiSocket = new WebSocket(`${scheme}://${location.host}${base}/roi${query}`);
  roiSocket.onmessage = (event) => onRoi(event.data, performance.now());
}

function firstFrame(timeoutMs) {
  return new Promise((resolve, reject) => {
    const started = state.frames;
    const timer = setTimeout(() => reject(new Error("no picture")), timeoutMs);
    const check = () => {
      if (state.frames > started) {
        clearTimeout(timer);
        resolve();
      } else setTimeout(check, 50);
    };
    check();
    video.play().catch(() => {});
  });
}

const TRANSPORTS = { whep: playWhep, flv: playFlv, hls: playHls, vod: playVod };
const POLL_MS = 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Each play() call is one attempt; a newer one (transport change, stream lost) ends older ones.
let attempt = 0;
// The transport that played last: tried first when the stream comes back.
let lastPlayed = null;

// Whether the stream plays now and, if not, why: one small JSON request, no token needed.
async function streamState() {
  try {
    const reply = await fetch(`/play${base}/status`, { cache: "no-store" });
    if (!reply.ok) return { live: false, state: "error", why: `the relay answered ${reply.status}` };
    return await reply.json();
  } catch {
    return { live: false, state: "unreachable", why: "the relay is not answering" };
  }
}

function waitingWhy(s) {
  // After a relay restart the relay no longer knows the stream was live; this page does.
  if (s.state === "not-live" && lastPlayed) return "the stream ended; waiting for it to come back";
  return s.why;
}

// Polls until the stream is live; false if a newer attempt took over meanwhile.
async function untilLive(mine) {
  for (;;) {
    const s = await streamState();
    if (mine !== attempt) return false;
    if (s.live) return true;
    state.waiting = s.state;
    const why = waitingWhy(s);
    setStatus("waiting for the stream…");
    $("waiting-why").textContent = why;
    $("waiting").hidden = false;
    await sleep(POLL_MS);
    if (mine !== attempt) return false;
  }
}

class NotLive extends Error {}

// Rejects with NotLive as soon as the stream is gone while a transport is still connecting,
// so no transport waits out its timeout on a stream that is not there.
function whileLive(mine) {
  let watching = true;
  const gone = (async () => {
    while (watching && mine === attempt) {
      await sleep(POLL_MS);
      if (!watching || mine !== attempt) break;
      const s = await streamState();
      if (watching && !s.live) throw new NotLive(s.why);
    }
    return new Promise(() => {});
  })();
  return { gone, stop: () => (watching = false) };
}

async function play(choice) {
  const mine = ++attempt;
  stop();
  // A recording is there or not: no live status to wait for.
  if (!vod && !(await untilLive(mine))) return;
  let order = choice === "auto" ? ["whep", "flv", "hls"] : [choice];
  if (lastPlayed && order.includes(lastPlayed)) order = [lastPlayed, ...order.filter((t) => t !== lastPlayed)];
  let notLive = false;
  for (const name of order) {
    stop();
    state.transport = name;
    state.waiting = null;
    $("waiting").hidden = true;
    setStatus(`connecting (${name})`);
    const watch = vod ? { gone: new Promise(() => {}), stop() {} } : whileLive(mine);
    try {
      await Promise.race([TRANSPORTS[name](mine), watch.gone]);
      if (mine !== attempt) return;
      lastPlayed = name;
      state.error = null;
      setStatus(`playing (${name})`);
      return;
    } catch (err) {
      if (mine !== attempt) return;
      state.error = String(err.message || err);
      if (err instanceof NotLive) {
        notLive = true;
        break;
      }
    } finally {
      watch.stop();
    }
  }
  stop();
  if (notLive) {
    play(choice);
    return;
  }
  setStatus(`not playing: ${state.error}`);
  setTimeout(() => mine === attempt && play(choice), 3000);
}

function stop() {
  if (session) session.close();
  session = null;
  if (roiSocket) roiSocket.close();
  roiSocket = null;
  clock = null;
  slackMs = 0;
  regions.clear();
  video.removeAttribute("src");
  video.srcObject = null;
}

function fail(err) {
  state.error = String(err.message || err);
  if (vod) {
    setStatus(video.ended ? "ended" : `not playing: ${state.error}`);
    return; // a recording does not come back by itself
  }
  if (state.status.startsWith("playing")) {
    setStatus(`lost: ${state.error}`);
    play($("transport").value);
  }
}

// --- per frame ----------------------------------------------------------------------

// Where the picture is inside the stage (the video is letterboxed, object-fit: contain).
function pictureRect() {
  const width = stage.clientWidth;
  const height = stage.clientHeight;
  const vw = video.videoWidth || width;
  const vh = video.videoHeight || height;
  const scale = Math.min(width / vw, height / vh);
  return { x: (width - vw * scale) / 2, y: (height - vh * scale) / 2, w: vw * scale, h: vh * scale, width, height };
}

function boxesFor(doc, rect) {
  if (!doc) return [];
  const sx = rect.w / doc.w;
  const sy = rect.h / doc.h;
  return doc.regions.map((r) => ({
    x: rect.x + r.left * sx,
    y: rect.y + r.top * sy,
    w: (r.right - r.left) * sx,
    h: (r.bottom - r.top) * sy,
    label: r.label || "",
  }));
}

let lastClipKey = "";
let shownDoc = null;

function render(doc) {
  shownDoc = doc;
  const rect = pictureRect();
  const boxes = boxesFor(doc, rect);
  state.doc = doc ? { pts: doc.pts, roi: doc.roi, regions: doc.regions } : null;
  state.boxes = boxes;
  overlay.setAttribute("viewBox", `0 0 ${rect.width} ${rect.height}`);
  if ($("show-regions").checked) {
    const svg = boxes
      .map(
        (b) =>
          `<rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}"></rect>` +
          `<text x="${b.x + 3}" y="${b.y + 13}">${b.label.replace(/[<&>"]/g, "")}</text>`,
      )
      .join("");
    overlay.innerHTML = svg;
  } else if (overlay.firstChild) overlay.replaceChildren();
  const key = `${rect.width}x${rect.height}:${boxes.map((b) => `${b.x|0},${b.y|0},${b.w|0},${b.h|0}`).join(";")}`;
  if (key !== lastClipKey) {
    lastClipKey = key;
    const clip = regionClip(boxes, rect.width, rect.height);
    applyClip(danmakuLayer, clip);
    applyClip(blurLayer, clip);
  }
}

let lastFrameAt = 0;

function onFrame(now, meta) {
  state.frames++;
  lastFrameAt = performance.now();
  const pts = frameOf(meta);
  state.pts = pts;
  state.aligned = pts !== null;
  const doc = pts === null ? regions.latest() : regions.at(pts, slackMs);
  render(doc);
  video.requestVideoFrameCallback(onFrame);
}

if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
  video.requestVideoFrameCallback(onFrame);
} else {
  // No per-frame callback: follow the newest regions at the display rate.
  let lastTime = -1;
  const tick = () => {
    if (video.currentTime !== lastTime) {
      lastTime = video.currentTime;
      state.frames++;
      lastFrameAt = performance.now();
    }
    render(regions.latest());
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

// --- controls -----------------------------------------------------------------------

$("title").textContent = `${appName}/${streamName}`;
$("show-regions").checked = flag("regions", false);
$("show-danmaku").checked = flag("danmaku", true);
$("show-blur").checked = flag("blur", false);
$("transport").value = TRANSPORTS[params.get("transport")] ? params.get("transport") : "auto";

const syncToggles = () => {
  danmakuLayer.hidden = !$("show-danmaku").checked;
  blurLayer.hidden = !$("show-blur").checked;
  lastClipKey = "";
  render(shownDoc); // a paused picture gets no frame callbacks: redraw now
};
for (const id of ["show-regions", "show-danmaku", "show-blur"]) $(id).addEventListener("change", syncToggles);
syncToggles();
// The publisher stopped (HTTP-FLV and HLS end like a file): wait for it to come back.
video.addEventListener("ended", () => fail(new Error("the stream ended")));
// A WebRTC peer that went away shows no error for a long while (ICE consent runs for 30 s):
// a picture that stands still for seconds, unpaused, means the stream is gone.
document.addEventListener("visibilitychange", () => {
  lastFrameAt = performance.now(); // back in view: give the picture its time again
});
// A picture still for a second is checked against the relay at once (one small request).
const STALL_MS = 4000;
let checkingStall = false;
setInterval(async () => {
  // A hidden tab gets no frame callbacks: that is no stall.
  if (!state.status.startsWith("playing") || video.paused || document.hidden) return;
  const still = performance.now() - lastFrameAt;
  if (still > STALL_MS) {
    fail(new Error("no picture"));
  } else if (still > POLL_MS && !checkingStall) {
    checkingStall = true;
    const s = await streamState();
    checkingStall = false;
    if (!s.live && state.status.startsWith("playing")) fail(new Error(s.why));
  }
}, 500);
$("unmute").addEventListener("change", () => {
  video.muted = !$("unmute").checked;
});
$("transport").addEventListener("change", () => play($("transport").value));
$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("comment").value.trim();
  if (text) danmaku.add(text);
  $("comment").value = "";
});

const SAMPLES = ["666", "nice shot!", "hello from the back row", "what a save", "lol", "go go go", "前方高能", "弹幕护体", "gg", "wow"];
if (flag("demo", false)) {
  setInterval(() => {
    if (!danmakuLayer.hidden && state.status.startsWith("playing")) {
      danmaku.add(SAMPLES[Math.floor(Math.random() * SAMPLES.length)]);
      state.comments = danmaku.count;
    }
  }, 250);
}

setInterval(() => {
  const doc = state.doc;
  $("info").textContent =
    `${state.transport || "-"} | frames ${state.frames} | pts ${state.pts === null ? "-" : Math.round(state.pts)}` +
    ` | regions ${doc ? doc.roi || "none" : "-"} | messages ${state.roiMessages}`;
}, 500);

play(vod ? "vod" : $("transport").value);
