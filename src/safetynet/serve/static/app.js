/* The SceneProof page: pick or drop two files, preview them, POST /v1/verify, draw the verdict. */
"use strict";

const $ = id => document.getElementById(id);
let model = null;  // GET /v1/model: patch size, stride, calibration
fetch("/v1/model").then(r => r.json()).then(m => { model = m; }).catch(() => {});

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function showPhoto(file) {
  const bmp = await createImageBitmap(file);
  for (const c of [$("photo"), $("overlay")]) { c.width = bmp.width; c.height = bmp.height; }
  $("photo").getContext("2d").drawImage(bmp, 0, 0);
  $("overlay").getContext("2d").clearRect(0, 0, bmp.width, bmp.height);
}

async function showDepth(file) {
  try {
    const d = await DepthPreview.decode(file);
    const [lo, hi] = DepthPreview.draw(d, $("depthview"));
    const scale = parseFloat($("depth_scale").value) || d.scale;
    $("depth-caption").textContent = d.kind === "disparity"
      ? `Disparity ${lo.toFixed(1)} to ${hi.toFixed(1)} px as a colour map (near = dark blue, far = yellow).`
      : `Depth ${(lo / scale).toFixed(2)} m (dark blue) to ${(hi / scale).toFixed(2)} m (yellow); black = no reading.`;
  } catch (e) {
    $("depth-caption").textContent = `No preview of this depth map (${e.message}); the server still judges it.`;
  }
}

function onPick(input) {
  const file = input.files[0];
  if (!file) return;
  $("result").hidden = true;
  status("");
  (input.id === "image" ? showPhoto(file) : showDepth(file))
    .catch(e => status(`Cannot show ${file.name}: ${e.message}`, true));
}

for (const input of [$("image"), $("depth")]) input.addEventListener("change", () => onPick(input));

for (const zone of document.querySelectorAll(".drop")) {
  zone.addEventListener("dragover", e => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", e => {
    e.preventDefault();
    zone.classList.remove("over");
    if (!e.dataTransfer.files.length) return;
    const input = $(zone.dataset.for);
    input.files = e.dataTransfer.files;
    onPick(input);
  });
}

function pRealColour(p, alpha) {  // red (fake, 0) to green (real, 1)
  const a = [179, 38, 30], b = [27, 127, 59];
  return `rgba(${a.map((c, k) => Math.round(c + p * (b[k] - c))).join(",")},${alpha})`;
}

/* Patches are cut from the working frame: the photo centre-cropped to the working aspect, then resized. */
function drawPatches(v) {
  const c = $("overlay"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const [H, W] = v.working_size, [h, w] = v.image_size;
  const patch = model ? model.patch : 64, stride = model ? model.stride : 32;
  let cw = w, ch = h;
  if (w / h > W / H) cw = Math.round(h * W / H); else if (w / h < W / H) ch = Math.round(w * H / W);
  const x0 = Math.floor((w - cw) / 2), y0 = Math.floor((h - ch) / 2), s = ch / H;
  const m = (patch - stride) / 2, lw = Math.max(2, c.width / 200);
  for (const p of v.patches) {  // the centre stride x stride square of each patch: a grid without overlap
    const x = x0 + (p.x + m) * s, y = y0 + (p.y + m) * s, size = stride * s;
    ctx.fillStyle = pRealColour(p.p_real, 0.45);
    ctx.fillRect(x, y, size, size);
    ctx.lineWidth = lw;
    ctx.strokeStyle = "rgba(255,255,255,0.8)";
    ctx.strokeRect(x, y, size, size);
    if (p.rejected) {
      ctx.strokeStyle = "#7b1fa2";
      ctx.lineWidth = 2 * lw;
      ctx.strokeRect(x + lw, y + lw, size - 2 * lw, size - 2 * lw);
      ctx.beginPath();
      ctx.moveTo(x + lw, y + lw); ctx.lineTo(x + size - lw, y + size - lw);
      ctx.moveTo(x + size - lw, y + lw); ctx.lineTo(x + lw, y + size - lw);
      ctx.stroke();
    }
  }
}

function render(v) {
  const kind = v.verdict.startsWith("rejected") ? "rejected" : v.verdict;
  $("result").className = kind;
  $("verdict").textContent = v.verdict;
  $("score").textContent = v.real_score === null ? "none (every patch rejected)" : v.real_score.toFixed(3);
  $("threshold").textContent = v.real_threshold.toFixed(3);
  // The whole-frame feature model has no patches (n_patches 0): say so instead of "0 % of 0".
  $("rejected").textContent = v.n_patches === 0
    ? (v.abstained ? "none: not enough depth evidence" : "none: whole-frame model, no patches")
    : `${Math.round(100 * v.rejected_fraction)} % of ${v.n_patches} (rejected above ${Math.round(100 * v.reject_fraction)} %)`;
  $("model").textContent = `${v.model_id}, sha256 ${v.model_sha256.slice(0, 12)}…`;
  const body = $("patches").tBodies[0];
  body.replaceChildren(...v.patches.map(p => {
    const tr = document.createElement("tr");
    for (const cell of [p.y, p.x, p.p_real.toFixed(3), p.valid_depth.toFixed(2), p.rejected ? "yes" : "no"]) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.append(td);
    }
    return tr;
  }));
  drawPatches(v);
  $("result").hidden = false;
}

$("form").addEventListener("submit", async e => {
  e.preventDefault();
  const image = $("image").files[0], depth = $("depth").files[0];
  if (!image || !depth) {
    status("Choose a colour image and a depth map first.", true);
    (image ? $("depth") : $("image")).focus();
    return;
  }
  const form = new FormData();
  form.append("image", image);
  form.append("depth", depth);
  if ($("depth_scale").value.trim()) form.append("depth_scale", $("depth_scale").value.trim());
  $("submit").disabled = true;
  $("result").hidden = true;
  status("Verifying…");
  try {
    const r = await fetch("/v1/verify", { method: "POST", body: form });
    const doc = await r.json().catch(() => ({ error: `the server answered ${r.status}` }));
    if (!r.ok) { status(`Not verified: ${doc.error}`, true); return; }
    render(doc);
    status(`Verified (request ${doc.request_id}).`);
  } catch (err) {
    status(`The server could not be reached (${err.message}).`, true);
  } finally {
    $("submit").disabled = false;
  }
});
