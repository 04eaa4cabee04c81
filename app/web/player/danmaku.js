// Danmaku (scrolling comments) and the region mask shared by the danmaku and blur layers.

const SVG_NS = "http://www.w3.org/2000/svg";

// A CSS mask image that is opaque everywhere except inside the given boxes (stage CSS px),
// so a masked layer shows nothing over the regions. Built as an SVG <mask> (white picture,
// black boxes) rather than an even-odd path, so overlapping regions stay holes.
export function regionMask(boxes, width, height, padding = 6) {
  const holes = boxes
    .map((b) => {
      const x = Math.max(0, b.x - padding);
      const y = Math.max(0, b.y - padding);
      const w = Math.min(width, b.x + b.w + padding) - x;
      const h = Math.min(height, b.y + b.h + padding) - y;
      const r = Math.min(w, h) / 6;
      return `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}" rx="${r.toFixed(1)}" fill="black"/>`;
    })
    .join("");
  const svg =
    `<svg xmlns="${SVG_NS}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">` +
    `<defs><mask id="m" maskUnits="userSpaceOnUse" x="0" y="0" width="${width}" height="${height}">` +
    `<rect width="${width}" height="${height}" fill="white"/>${holes}</mask></defs>` +
    `<rect width="${width}" height="${height}" fill="black" mask="url(#m)"/></svg>`;
  return `url("data:image/svg+xml,${encodeURIComponent(svg)}")`;
}

export function applyMask(element, mask) {
  element.style.maskImage = mask;
  element.style.webkitMaskImage = mask;
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
