// Per-frame region metadata: parsing, a pts-ordered store, and the clocks that tell which
// frame is on screen. The JSON is the relay's compact ROI document (DESIGN.md):
// {"pts": ms, "w": 1280, "h": 720, "template": .., "model": .., "roi": "..", "regions": [..]}

export const ROI_SEI_UUID = "a35c7405e9064ec689e030ff9368d21e";

export function parseRoi(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (!doc || typeof doc !== "object") return null;
  if (!Number.isFinite(doc.pts) || !(doc.w > 0) || !(doc.h > 0)) return null;
  if (!Array.isArray(doc.regions)) return null;
  const regions = doc.regions.filter(
    (r) =>
      r &&
      Number.isFinite(r.top) &&
      Number.isFinite(r.left) &&
      Number.isFinite(r.bottom) &&
      Number.isFinite(r.right) &&
      r.bottom > r.top &&
      r.right > r.left,
  );
  return { ...doc, regions, text };
}

// The documents of recent frames, ordered by pts. A frame without a document of its own
// keeps the previous frame's regions (the reference's rule), so lookups take the latest
// document at or before the frame.
export class RegionTrack {
  constructor(limit = 1500) {
    this.limit = limit;
    this.docs = [];
  }

  add(doc) {
    const docs = this.docs;
    let i = docs.length;
    while (i > 0 && docs[i - 1].pts > doc.pts) i--;
    if (i > 0 && docs[i - 1].pts === doc.pts) docs[i - 1] = doc;
    else docs.splice(i, 0, doc);
    if (docs.length > this.limit) docs.splice(0, docs.length - this.limit);
  }

  // slackMs: how far a document may lie after the frame time and still be its own (the
  // frame time a browser reports can be a few ms off the stream's pts, as with native HLS).
  at(pts, slackMs = 0) {
    pts += slackMs;
    const docs = this.docs;
    let lo = 0;
    let hi = docs.length - 1;
    let found = null;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (docs[mid].pts <= pts) {
        found = docs[mid];
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  latest() {
    return this.docs.length ? this.docs[this.docs.length - 1] : null;
  }

  clear() {
    this.docs = [];
  }
}

const RTP_WRAP = 2 ** 32;
const RTP_PER_MS = 90;

// Maps the RTP timestamps of WebRTC frames to the stream's pts. The relay sends each frame's
// JSON on the data channel just before the frame itself, and RTP time = offset + 90 * pts
// for one unknown offset (the sender's random origin). For each shown frame, the message
// that arrived closest to the frame's own arrival gives a candidate offset; the correct
// offset wins the vote at once, since every correctly paired frame proposes the same one.
export class RtpClock {
  constructor() {
    this.arrivals = []; // [arrival ms (performance.now()), pts]
    this.votes = new Map();
    this.offset = null;
    this.latestPts = 0;
  }

  message(pts, arrival) {
    this.arrivals.push([arrival, pts]);
    if (this.arrivals.length > 300) this.arrivals.shift();
    this.latestPts = Math.max(this.latestPts, pts);
  }

  frame(rtp, receiveTime) {
    if (this.offset === null) this.vote(rtp, receiveTime);
    if (this.offset === null) return null;
    const ms = (((rtp - this.offset) % RTP_WRAP) + RTP_WRAP) % RTP_WRAP / RTP_PER_MS;
    // RTP time wraps every 13.25 h; take the turn closest to the pts the messages are at.
    const turn = RTP_WRAP / RTP_PER_MS;
    return ms + Math.round((this.latestPts - ms) / turn) * turn;
  }

  vote(rtp, receiveTime) {
    if (!Number.isFinite(receiveTime) || !this.arrivals.length) return;
    let best = null;
    for (const [arrival, pts] of this.arrivals) {
      const gap = Math.abs(arrival - receiveTime);
      if (gap < 150 && (best === null || gap < best[0])) best = [gap, pts];
    }
    if (best === null) return;
    const candidate = (((rtp - RTP_PER_MS * best[1]) % RTP_WRAP) + RTP_WRAP) % RTP_WRAP;
    const count = (this.votes.get(candidate) || 0) + 1;
    this.votes.set(candidate, count);
    let total = 0;
    for (const n of this.votes.values()) total += n;
    if (count >= 5 && count * 2 > total) this.offset = candidate;
  }
}

// --- SEI (for the HTTP-FLV path, which sees the coded frames) ---------------------------

function unescapeRbsp(nal) {
  const out = new Uint8Array(nal.length);
  let n = 0;
  let zeros = 0;
  for (const byte of nal) {
    if (zeros >= 2 && byte === 3) {
      zeros = 0;
      continue;
    }
    out[n++] = byte;
    zeros = byte === 0 ? zeros + 1 : 0;
  }
  return out.subarray(0, n);
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const decoder = new TextDecoder();

// The ROI JSON of one SEI NAL unit (H.264 type 6), or null.
export function roiFromSei(nal, headerBytes = 1) {
  const rbsp = unescapeRbsp(nal.subarray(headerBytes));
  let pos = 0;
  while (pos < rbsp.length && !(rbsp[pos] === 0x80 && pos === rbsp.length - 1)) {
    let type = 0;
    while (rbsp[pos] === 0xff) {
      type += 255;
      pos++;
    }
    type += rbsp[pos++];
    let size = 0;
    while (rbsp[pos] === 0xff) {
      size += 255;
      pos++;
    }
    size += rbsp[pos++];
    if (pos + size > rbsp.length) return null;
    if (type === 5 && size >= 16 && hex(rbsp.subarray(pos, pos + 16)) === ROI_SEI_UUID) {
      return decoder.decode(rbsp.subarray(pos + 16, pos + size));
    }
    pos += size;
  }
  return null;
}
