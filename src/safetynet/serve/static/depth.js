/* Depth maps decoded in the browser, only to show them as a colour map (the server decodes its own copy).
   16-bit grey PNG (inflated with the browser's DecompressionStream), binary PGM, .npy and PFM. */
"use strict";

const DepthPreview = (() => {
  async function inflate(chunks) {
    const stream = new Blob(chunks).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  function paeth(a, b, c) {
    const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
    return pa <= pb && pa <= pc ? a : (pb <= pc ? b : c);
  }

  async function png16(buf) {
    const dv = new DataView(buf), bytes = new Uint8Array(buf);
    const sig = [137, 80, 78, 71, 13, 10, 26, 10];
    if (!sig.every((v, i) => bytes[i] === v)) throw new Error("not a PNG file");
    let off = 8, w = 0, h = 0, depth = 0, colour = 0, interlace = 0;
    const idat = [];
    while (off + 8 <= buf.byteLength) {
      const len = dv.getUint32(off), type = String.fromCharCode(...bytes.subarray(off + 4, off + 8));
      const data = bytes.subarray(off + 8, off + 8 + len);
      if (type === "IHDR") {
        w = dv.getUint32(off + 8); h = dv.getUint32(off + 12);
        depth = data[8]; colour = data[9]; interlace = data[12];
      } else if (type === "IDAT") idat.push(data);
      else if (type === "IEND") break;
      off += 12 + len;
    }
    if (depth !== 16 || colour !== 0) throw new Error(`a ${depth}-bit ${colour === 0 ? "grey" : "colour"} PNG is not a depth map`);
    if (interlace !== 0) throw new Error("interlaced PNG: no preview");
    const raw = await inflate(idat), stride = w * 2, out = new Uint8Array(h * stride);
    for (let y = 0; y < h; y++) {
      const ft = raw[y * (stride + 1)], src = y * (stride + 1) + 1, dst = y * stride;
      for (let i = 0; i < stride; i++) {
        const x = raw[src + i], a = i >= 2 ? out[dst + i - 2] : 0, b = y ? out[dst - stride + i] : 0;
        const c = y && i >= 2 ? out[dst - stride + i - 2] : 0;
        out[dst + i] = (ft === 0 ? x : ft === 1 ? x + a : ft === 2 ? x + b : ft === 3 ? x + ((a + b) >> 1)
          : x + paeth(a, b, c)) & 255;
      }
    }
    const v = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) v[i] = (out[2 * i] << 8) | out[2 * i + 1];
    return { w, h, v, scale: 1000, kind: "depth" };
  }

  function header(bytes, n) { return new TextDecoder("latin1").decode(bytes.subarray(0, n)); }

  function pgm(buf) {
    const bytes = new Uint8Array(buf);
    const m = /^P5\s+(?:#[^\n]*\s+)*(\d+)\s+(?:#[^\n]*\s+)*(\d+)\s+(?:#[^\n]*\s+)*(\d+)\s/.exec(header(bytes, 200));
    if (!m) throw new Error("not a binary PGM");
    const w = +m[1], h = +m[2], maxval = +m[3], dv = new DataView(buf, m[0].length);
    if (maxval < 256) throw new Error("an 8-bit PGM is not a depth map");
    const v = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) v[i] = dv.getUint16(2 * i, false);
    return { w, h, v, scale: 1000, kind: "depth" };
  }

  function npy(buf) {
    const bytes = new Uint8Array(buf), dv = new DataView(buf);
    if (header(bytes, 6) !== "\x93NUMPY") throw new Error("not a .npy file");
    const major = bytes[6], hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
    const start = major === 1 ? 10 : 12, hdr = header(bytes.subarray(start), hlen);
    const descr = /'descr':\s*'([<>|=])([fiu])(\d)'/.exec(hdr), shape = /'shape':\s*\(([^)]*)\)/.exec(hdr);
    if (!descr || !shape || /'fortran_order':\s*True/.test(hdr)) throw new Error("unsupported .npy layout");
    const dims = shape[1].split(",").map(s => s.trim()).filter(Boolean).map(Number).filter(d => d !== 1);
    if (dims.length !== 2) throw new Error("not a 2-D array");
    const [h, w] = dims, little = descr[1] !== ">", size = +descr[3], kind = descr[2];
    const get = { f4: "getFloat32", f8: "getFloat64", i2: "getInt16", u2: "getUint16", i4: "getInt32",
                  u4: "getUint32", u1: "getUint8", i1: "getInt8" }[kind + size];
    if (!get) throw new Error("unsupported .npy dtype");
    const body = new DataView(buf, start + hlen), v = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) v[i] = body[get](i * size, little);
    return { w, h, v, scale: 1, kind: "depth" };
  }

  function pfm(buf) {
    const bytes = new Uint8Array(buf);
    const m = /^Pf\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s/.exec(header(bytes, 100));
    if (!m) throw new Error("not a single-channel PFM");
    const w = +m[1], h = +m[2], little = +m[3] < 0, dv = new DataView(buf, m[0].length), v = new Float32Array(w * h);
    for (let y = 0; y < h; y++)  // PFM rows run bottom to top
      for (let x = 0; x < w; x++) v[(h - 1 - y) * w + x] = dv.getFloat32(4 * (y * w + x), little);
    return { w, h, v, scale: 1, kind: "disparity" };
  }

  async function decode(file) {
    const buf = await file.arrayBuffer(), name = file.name.toLowerCase();
    const b = new Uint8Array(buf.slice(0, 8));
    if (name.endsWith(".npy") || b[0] === 0x93) return npy(buf);
    if (name.endsWith(".pgm") || (b[0] === 80 && b[1] === 53)) return pgm(buf);
    if (name.endsWith(".pfm") || (b[0] === 80 && b[1] === 102)) return pfm(buf);
    return png16(buf);
  }

  // viridis at 9 stops: dark blue (near) to yellow (far); readable for colour-blind viewers.
  const STOPS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
                 [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  function colour(t) {
    const x = Math.min(Math.max(t, 0), 1) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2), f = x - i;
    return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
  }

  /* Draw on `canvas`; returns [near, far] in stored units (2nd and 98th percentile of valid readings). */
  function draw(d, canvas) {
    const valid = [];
    for (const x of d.v) if (Number.isFinite(x) && x > 0 && x < 65535) valid.push(x);
    if (!valid.length) throw new Error("no valid depth reading");
    valid.sort((a, b) => a - b);
    const lo = valid[Math.floor(valid.length * 0.02)], hi = valid[Math.floor(valid.length * 0.98)] || lo + 1;
    canvas.width = d.w; canvas.height = d.h;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(d.w, d.h);
    for (let i = 0; i < d.w * d.h; i++) {
      const x = d.v[i], ok = Number.isFinite(x) && x > 0 && x < 65535;
      let t = (x - lo) / (hi - lo || 1);
      if (d.kind === "disparity") t = 1 - t;  // large disparity = near
      const [r, g, b] = ok ? colour(t) : [0, 0, 0];
      img.data.set([r, g, b, 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
    return [lo, hi];
  }

  return { decode, draw };
})();
