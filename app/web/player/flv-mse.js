// HTTP-FLV playback through Media Source Extensions: FLV tags remuxed into fragmented MP4
// (one fragment per frame, no re-encoding), H.264 + AAC. Each video frame's ROI SEI is read
// on the way, with the frame's pts: the media timeline is the FLV timeline in ms, so a frame
// shown at mediaTime t is the frame whose pts is t * 1000.

import { roiFromSei } from "./regions.js";

const VIDEO_TRACK = 1;
const AUDIO_TRACK = 2;
const AAC_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

// --- MP4 boxes ------------------------------------------------------------------------

function u32(v) {
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
}
function u16(v) {
  return [(v >>> 8) & 255, v & 255];
}
function bytes(...parts) {
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}
function box(type, ...payload) {
  const body = bytes(...payload);
  return bytes(u32(body.length + 8), Array.from(type, (c) => c.charCodeAt(0)), body);
}
function fullBox(type, version, flags, ...payload) {
  return box(type, [version, (flags >> 16) & 255, (flags >> 8) & 255, flags & 255], ...payload);
}
const MATRIX = [...u32(0x10000), ...u32(0), ...u32(0), ...u32(0), ...u32(0x10000), ...u32(0), ...u32(0), ...u32(0), ...u32(0x40000000)];

function initSegment(track) {
  const isVideo = track.kind === "video";
  const sampleEntry = isVideo
    ? box(
        "avc1",
        [0, 0, 0, 0, 0, 0, ...u16(1), ...new Array(16).fill(0)],
        u16(track.width),
        u16(track.height),
        u32(0x480000),
        u32(0x480000),
        u32(0),
        u16(1),
        new Array(32).fill(0),
        u16(0x18),
        u16(0xffff),
        box("avcC", track.config),
      )
    : box(
        "mp4a",
        [0, 0, 0, 0, 0, 0, ...u16(1), ...new Array(8).fill(0)],
        u16(track.channels),
        u16(16),
        u32(0),
        u32(track.rate << 16),
        esds(track.config),
      );
  const handler = isVideo ? "vide" : "soun";
  const mediaHeader = isVideo ? fullBox("vmhd", 0, 1, new Array(8).fill(0)) : fullBox("smhd", 0, 0, u32(0));
  const dinf = box("dinf", fullBox("dref", 0, 0, u32(1), fullBox("url ", 0, 1)));
  const stbl = box(
    "stbl",
    fullBox("stsd", 0, 0, u32(1), sampleEntry),
    fullBox("stts", 0, 0, u32(0)),
    fullBox("stsc", 0, 0, u32(0)),
    fullBox("stsz", 0, 0, u32(0), u32(0)),
    fullBox("stco", 0, 0, u32(0)),
  );
  const trak = box(
    "trak",
    fullBox(
      "tkhd",
      0,
      3,
      u32(0),
      u32(0),
      u32(track.id),
      u32(0),
      u32(0),
      new Array(8).fill(0),
      u16(0),
      u16(0),
      u16(isVideo ? 0 : 0x100),
      u16(0),
      MATRIX,
      u32((isVideo ? track.width : 0) << 16),
      u32((isVideo ? track.height : 0) << 16),
    ),
    box(
      "mdia",
      fullBox("mdhd", 0, 0, u32(0), u32(0), u32(track.timescale), u32(0), u16(0x55c4), u16(0)),
      fullBox("hdlr", 0, 0, u32(0), Array.from(handler, (c) => c.charCodeAt(0)), new Array(12).fill(0), [0]),
      box("minf", mediaHeader, dinf, stbl),
    ),
  );
  const moov = box(
    "moov",
    fullBox("mvhd", 0, 0, u32(0), u32(0), u32(1000), u32(0), u32(0x10000), u16(0x100), new Array(10).fill(0), MATRIX, new Array(24).fill(0), u32(3)),
    trak,
    box("mvex", fullBox("trex", 0, 0, u32(track.id), u32(1), u32(0), u32(0), u32(0))),
  );
  const ftyp = box("ftyp", Array.from("isom", (c) => c.charCodeAt(0)), u32(512), Array.from("isomiso6mp41", (c) => c.charCodeAt(0)));
  return bytes(ftyp, moov);
}

function esds(asc) {
  const decSpecific = [0x05, asc.length, ...asc];
  const decConfig = [0x04, 13 + decSpecific.length, 0x40, 0x15, 0, 0, 0, ...u32(0), ...u32(0), ...decSpecific];
  const es = [0x03, 3 + decConfig.length + 3, ...u16(0), 0, ...decConfig, 0x06, 1, 0x02];
  return fullBox("esds", 0, 0, es);
}

function fragment(track, sequence, sample) {
  const trunFlags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800;
  const flags = sample.key ? 0x02000000 : 0x01010000;
  const build = (dataOffset) =>
    box(
      "moof",
      fullBox("mfhd", 0, 0, u32(sequence)),
      box(
        "traf",
        fullBox("tfhd", 0, 0x020000, u32(track.id)),
        fullBox("tfdt", 1, 0, u32(Math.floor(sample.dts / 2 ** 32)), u32(sample.dts >>> 0)),
        fullBox("trun", 1, trunFlags, u32(1), u32(dataOffset), u32(sample.duration), u32(sample.data.length), u32(flags), u32(sample.cts | 0)),
      ),
    );
  const moofSize = build(0).length;
  return bytes(build(moofSize + 8), u32(sample.data.length + 8), [0x6d, 0x64, 0x61, 0x74], sample.data);
}

// --- FLV -----------------------------------------------------------------------------

class FlvReader {
  constructor(onTag) {
    this.onTag = onTag;
    this.buffer = new Uint8Array(0);
    this.headerDone = false;
  }

  push(chunk) {
    this.buffer = this.buffer.length ? bytes(this.buffer, chunk) : chunk;
    let pos = 0;
    const buf = this.buffer;
    if (!this.headerDone) {
      if (buf.length < 13) return;
      if (buf[0] !== 0x46 || buf[1] !== 0x4c || buf[2] !== 0x56) throw new Error("not FLV");
      pos = ((buf[5] << 24) | (buf[6] << 16) | (buf[7] << 8) | buf[8]) + 4;
      this.headerDone = true;
    }
    while (buf.length - pos >= 11) {
      const size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3];
      if (buf.length - pos < 11 + size + 4) break;
      const ts = ((buf[pos + 7] << 24) | (buf[pos + 4] << 16) | (buf[pos + 5] << 8) | buf[pos + 6]) >>> 0;
      this.onTag(buf[pos] & 0x1f, ts, buf.subarray(pos + 11, pos + 11 + size));
      pos += 11 + size + 4;
    }
    this.buffer = buf.slice(pos);
  }
}

function nalUnits(data, lengthSize) {
  const nals = [];
  let pos = 0;
  while (pos + lengthSize <= data.length) {
    let size = 0;
    for (let i = 0; i < lengthSize; i++) size = size * 256 + data[pos + i];
    pos += lengthSize;
    if (pos + size > data.length) break;
    nals.push(data.subarray(pos, pos + size));
    pos += size;
  }
  return nals;
}

function si24(b, pos) {
  const v = (b[pos] << 16) | (b[pos + 1] << 8) | b[pos + 2];
  return v & 0x800000 ? v - 0x1000000 : v;
}

function hex2(v) {
  return v.toString(16).padStart(2, "0");
}

// --- player --------------------------------------------------------------------------

export async function startFlv(url, video, { onRoi, onError } = {}) {
  const mediaSource = new MediaSource();
  const objectUrl = URL.createObjectURL(mediaSource);
  video.src = objectUrl;
  await new Promise((resolve) => mediaSource.addEventListener("sourceopen", resolve, { once: true }));
  const controller = new AbortController();
  const tracks = {};
  const pending = [];
  let started = false;
  let sequence = 1;
  let metaWidth = 0;
  let metaHeight = 0;

  const queue = (track, data) => {
    track.queue.push(data);
    pump(track);
  };
  const pump = (track) => {
    if (!track.buffer || track.buffer.updating || !track.queue.length) return;
    try {
      track.buffer.appendBuffer(track.queue.shift());
    } catch (err) {
      onError && onError(err);
    }
  };
  const start = () => {
    for (const track of Object.values(tracks)) {
      const type = track.kind === "video" ? "video/mp4" : "audio/mp4";
      track.buffer = mediaSource.addSourceBuffer(`${type}; codecs="${track.codec}"`);
      track.buffer.addEventListener("updateend", () => pump(track));
      queue(track, initSegment(track));
    }
    started = true;
    for (const [track, sample] of pending.splice(0)) queue(track, fragment(track, sequence++, sample));
  };
  const emit = (track, sample) => {
    if (!started) {
      pending.push([track, sample]);
      return;
    }
    queue(track, fragment(track, sequence++, sample));
  };

  const onTag = (type, ts, body) => {
    if (type === 9 && body.length >= 5 && (body[0] & 0x0f) === 7) {
      const key = body[0] >> 4 === 1;
      const packetType = body[1];
      const data = body.subarray(5);
      if (packetType === 0) {
        if (started) return; // a new header mid-stream needs a new player: not handled here
        const lengthSize = (data[4] & 3) + 1;
        tracks.video = {
          kind: "video",
          id: VIDEO_TRACK,
          timescale: 1000,
          config: data.slice(),
          codec: `avc1.${hex2(data[1])}${hex2(data[2])}${hex2(data[3])}`,
          width: metaWidth || 640,
          height: metaHeight || 360,
          lengthSize,
          queue: [],
          lastDts: null,
          gap: 40,
        };
        return;
      }
      const track = tracks.video;
      if (packetType !== 1 || !track) return;
      if (!started) start();
      const cts = si24(body, 2);
      for (const nal of nalUnits(data, track.lengthSize)) {
        if ((nal[0] & 0x1f) === 6) {
          const text = roiFromSei(nal);
          if (text !== null) onRoi && onRoi(text, ts + cts);
        }
      }
      if (track.lastDts !== null && ts > track.lastDts) track.gap = ts - track.lastDts;
      track.lastDts = ts;
      emit(track, { dts: ts, cts, duration: track.gap, key, data: data.slice() });
    } else if (type === 8 && body.length >= 2 && body[0] >> 4 === 10) {
      if (body[1] === 0) {
        if (started) return;
        const asc = body.slice(2);
        const objectType = asc[0] >> 3;
        const rateIndex = ((asc[0] & 7) << 1) | (asc[1] >> 7);
        const rate = AAC_RATES[rateIndex] || 44100;
        tracks.audio = {
          kind: "audio",
          id: AUDIO_TRACK,
          timescale: rate,
          rate,
          channels: (asc[1] >> 3) & 15 || 2,
          config: asc,
          codec: `mp4a.40.${objectType}`,
          queue: [],
        };
        return;
      }
      const track = tracks.audio;
      if (!track || !tracks.video) return;
      if (!started) start();
      emit(track, { dts: Math.round((ts * track.rate) / 1000), cts: 0, duration: 1024, key: true, data: body.slice(2) });
    } else if (type === 18) {
      const meta = readMetaData(body);
      metaWidth = meta.width || metaWidth;
      metaHeight = meta.height || metaHeight;
    }
  };

  const reader = new FlvReader(onTag);
  const response = await fetch(url, { signal: controller.signal });
  if (!response.ok) throw new Error(`HTTP-FLV: ${response.status}`);
  const body = response.body.getReader();

  // Live edge: start near the newest frame, speed up a little when behind, jump when far
  // behind (a stall, a background tab). Media time is stream time, so the lag is exact.
  const chase = setInterval(() => {
    const ranges = video.buffered;
    if (!ranges.length || video.paused) return;
    const start = ranges.start(0);
    const end = ranges.end(ranges.length - 1);
    const lag = end - video.currentTime;
    if (video.currentTime < start || lag > 1.0) video.currentTime = Math.max(start, end - 0.2);
    video.playbackRate = lag > 0.4 ? 1.1 : 1.0;
    for (const track of Object.values(tracks)) {
      const buffer = track.buffer;
      if (buffer && !buffer.updating && buffer.buffered.length && buffer.buffered.start(0) < video.currentTime - 30) {
        buffer.remove(0, video.currentTime - 20);
      }
    }
  }, 250);

  (async () => {
    try {
      for (;;) {
        const { value, done } = await body.read();
        if (done) break;
        reader.push(value);
      }
      if (mediaSource.readyState === "open") mediaSource.endOfStream();
    } catch (err) {
      if (!controller.signal.aborted) onError && onError(err);
    } finally {
      clearInterval(chase);
    }
  })();

  return {
    close() {
      controller.abort();
      clearInterval(chase);
      URL.revokeObjectURL(objectUrl);
    },
  };
}

// The numbers of an AMF0 onMetaData message (width, height, ...); stops at other types.
function readMetaData(body) {
  const view = new DataView(body.buffer, body.byteOffset, body.length);
  const text = new TextDecoder("latin1");
  const found = {};
  let pos = 0;
  const string = () => {
    const size = view.getUint16(pos);
    const value = text.decode(body.subarray(pos + 2, pos + 2 + size));
    pos += 2 + size;
    return value;
  };
  try {
    if (body[pos++] !== 2 || string() !== "onMetaData") return found;
    const kind = body[pos++];
    if (kind === 8) pos += 4; // ECMA array count
    else if (kind !== 3) return found;
    while (pos + 3 <= body.length) {
      const key = string();
      const type = body[pos++];
      if (type === 0) {
        found[key] = view.getFloat64(pos);
        pos += 8;
      } else if (type === 1) pos += 1;
      else if (type === 2) string();
      else break;
    }
  } catch {
    // a short or odd message: keep what was read
  }
  return found;
}
