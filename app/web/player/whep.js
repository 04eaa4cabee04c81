// WHEP playback: one recvonly peer connection, the SDP offer POSTed to the relay, and a
// data channel "roi" on which the relay sends each frame's region JSON.

export async function startWhep(url, { onRoi, onState, dataChannel = true } = {}) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  let channel = null;
  if (dataChannel) {
    // Unordered and without retransmission: a late region message is worth less than the
    // next one, and a frame without its own message keeps the previous regions anyway.
    channel = pc.createDataChannel("roi", { ordered: false, maxRetransmits: 0 });
    channel.onmessage = (event) => onRoi && onRoi(event.data, performance.now());
  }
  const media = new MediaStream();
  pc.ontrack = (event) => media.addTrack(event.track);
  pc.onconnectionstatechange = () => onState && onState(pc.connectionState);

  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc, 2000);
  const reply = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (reply.status !== 201) {
    pc.close();
    let detail = `${reply.status}`;
    try {
      detail = (await reply.json()).detail || detail;
    } catch {
      // not JSON: keep the status
    }
    throw new Error(`WHEP: ${detail}`);
  }
  const location = new URL(reply.headers.get("Location"), new URL(url, document.baseURI)).href;
  await pc.setRemoteDescription({ type: "answer", sdp: await reply.text() });

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    pc.close();
    try {
      await fetch(location, { method: "DELETE" });
    } catch {
      // the session ends with the peer connection anyway
    }
  };
  return { pc, media, channel, location, close };
}

// The relay does not take trickled candidates, so the offer goes out with them all.
function iceGathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}
