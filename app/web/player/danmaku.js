// Danmaku (scrolling comments) and the region clip shared by the danmaku and blur layers.

// The layer's visible area: the whole stage minus the regions (grown by a little padding),
// as a clip-path. A clip path is plain geometry, applied in the same frame as the overlay
// that is drawn from the same boxes; a mask image (an SVG data URL) is decoded
// asynchronously and can show the previous frame's regions for a while.
export function regionClip(boxes, width, height, padding = 6) {
  const holes = disjointRects(
    boxes.map((b) => ({
      x0: Math.max(0, b.x - padding),
      y0: Math.max(0, b.y - padding),
      x1: Math.min(width, b.x + b.w + padding),
      y1: Math.min(height, b.y + b.h + padding),
    })),
  );
  const f = (v) => Math.round(v * 10) / 10;
  const path = [`M0 0H${f(width)}V${f(height)}H0Z`];
  for (const r of holes) path.push(`M${f(r.x0)} ${f(r.y0)}H${f(r.x1)}V${f(r.y1)}H${f(r.x0)}Z`);
  return `path(evenodd, "${path.join("")}")`;
}

// Overlapping rectangles as disjoint ones covering the same area (vertical strips with
// merged spans), so that an even-odd path keeps every overlap a hole.
export function disjointRects(rects) {
  const live = rects.filter((r) => r.x1 > r.x0 && r.y1 > r.y0);
  const xs = [...new Set(live.flatMap((r) => [r.x0, r.x1]))].sort((a, b) => a - b);
  const out = [];
  for (let i = 0; i + 1 < xs.length; i++) {
    const [a, b] = [xs[i], xs[i + 1]];
    const spans = live
      .filter((r) => r.x0 <= a && r.x1 >= b)
      .map((r) => [r.y0, r.y1])
      .sort((p, q) => p[0] - q[0]);
    let current = null;
    for (const [y0, y1] of spans) {
      if (current && y0 <= current[1]) current[1] = Math.max(current[1], y1);
      else {
        if (current) out.push({ x0: a, x1: b, y0: current[0], y1: current[1] });
        current = [y0, y1];
      }
    }
    if (current) out.push({ x0: a, x1: b, y0: current[0], y1: current[1] });
  }
  return out;
}

export function applyClip(element, clip) {
  element.style.clipPath = clip;
}

export class DanmakuLayer {
  constructor(layer, { color = "#ffffff", shadow = true, durationMs = 7000, fontPx = 24 } = {}) {
    this.layer = layer;
    this.color = color;
    this.shadow = shadow;
    this.durationMs = durationMs;
    this.fontPx = fontPx;
    this.lanesFreeAt = [];
    this.count = 0;
  }

  add(text, color = this.color) {
    const width = this.layer.clientWidth;
    const height = this.layer.clientHeight;
    if (!width || !height || !text) return;
    const lineHeight = Math.round(this.fontPx * 1.3);
    const lanes = Math.max(1, Math.floor(height / lineHeight));
    if (this.lanesFreeAt.length !== lanes) this.lanesFreeAt = new Array(lanes).fill(0);
    const now = performance.now();
    // Random among the free lanes, so comments spread over the picture; when every lane is
    // busy, the one that frees first.
    const free = [];
    let soonest = 0;
    for (let i = 0; i < lanes; i++) {
      if (this.lanesFreeAt[i] <= now) free.push(i);
      if (this.lanesFreeAt[i] < this.lanesFreeAt[soonest]) soonest = i;
    }
    const lane = free.length ? free[Math.floor(Math.random() * free.length)] : soonest;
    const item = document.createElement("span");
    item.className = "comment";
    item.textContent = text;
    item.style.color = color;
    item.style.fontSize = `${this.fontPx}px`;
    item.style.top = `${lane * lineHeight}px`;
    if (!this.shadow) item.style.textShadow = "none";
    this.layer.appendChild(item);
    const itemWidth = item.offsetWidth;
    // One speed for every comment (a stage width per durationMs), so a comment never
    // catches up with the one ahead of it in its lane.
    const speed = width / this.durationMs;
    this.lanesFreeAt[lane] = now + (itemWidth + 24) / speed;
    const flight = item.animate(
      [{ transform: `translateX(${width}px)` }, { transform: `translateX(${-itemWidth}px)` }],
      { duration: (width + itemWidth) / speed, easing: "linear" },
    );
    flight.onfinish = () => item.remove();
    this.count++;
  }

  clear() {
    this.layer.replaceChildren();
    this.lanesFreeAt = [];
  }
}
