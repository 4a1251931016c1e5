// vlbridge web demo: one conversation about one image, answers streamed from /v1/chat/completions (SSE);
// boxes of grounded answers (the "vlbridge" extension) are drawn over the image, generated images shown inline.
"use strict";
const $ = (id) => document.getElementById(id);
const GROUNDED_PROMPT = "Describe the image briefly, with a box for each object.";
const PALETTE = ["#00ff00", "#ff40ff", "#00c8ff", "#ffc800", "#ff5050", "#a0a0ff"];
let modelId = null;
let imageUrl = null;        // data URL of the current image
let messages = [];          // the conversation so far (OpenAI messages)
let imageSent = false;      // the image goes with the first question about it

async function loadCard() {
  const res = await fetch("/v1/models");
  const model = (await res.json()).data[0];
  modelId = model.id;
  const c = model.vlbridge || {};
  const p = c.parameters || {};
  const fmt = (n) => n >= 1e9 ? (n / 1e9).toFixed(2) + "B" : n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : (n / 1e3).toFixed(0) + "k";
  const rows = [["model", model.id], ["connector", c.connector], ["tokens / image", (c.dynamic_tokens ? "≤ " : "") + c.visual_tokens_per_image],
    ["parameters", p.total ? `${fmt(p.total)} (vision ${fmt(p.vision)}, connector ${fmt(p.connector)}, LLM ${fmt(p.llm)})` : "?"],
    ["vision", `${c.vision} ${c.image_size}px`], ["LLM", c.llm]];
  if (c.region_tokens) rows.push(["grounding", "region tokens"]);
  if (c.generates_images) rows.push(["generates", "images"]);
  $("card").innerHTML = "";
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    if (k === "model") dd.id = "card-name";
    if (k === "connector") dd.id = "card-connector";
    $("card").append(dt, dd);
  }
}

function setImage(file) {
  if (!file || !file.type.startsWith("image/")) return;
  const reader = new FileReader();
  reader.onload = () => {
    imageUrl = reader.result;
    $("preview").src = imageUrl;
    $("stage").classList.add("has-image");
    newChat();
  };
  reader.readAsDataURL(file);
}

function newChat() {
  messages = []; imageSent = false;
  $("log").innerHTML = ""; $("boxes").innerHTML = ""; $("status").textContent = "";
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const span = document.createElement("span");
  span.className = "text"; span.textContent = text;
  div.append(span);
  $("log").append(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

function drawBoxes(boxes) {
  $("boxes").innerHTML = "";
  boxes.forEach((b, k) => {
    const [x1, y1, x2, y2] = b.box;
    const div = document.createElement("div");
    div.className = "box";
    div.style.borderColor = PALETTE[k % PALETTE.length];
    Object.assign(div.style, { left: `${x1 * 100}%`, top: `${y1 * 100}%`, width: `${(x2 - x1) * 100}%`, height: `${(y2 - y1) * 100}%` });
    div.dataset.box = JSON.stringify(b.box);
    const label = document.createElement("span");
    label.textContent = b.phrase || `box ${k}`;
    label.style.background = PALETTE[k % PALETTE.length];
    div.append(label);
    $("boxes").append(div);
  });
}

async function ask(question) {
  if (!question.trim() || !modelId) return;
  let content = question;
  const user = addMessage("user", question);
  if (imageUrl && !imageSent) {
    content = [{ type: "image_url", image_url: { url: imageUrl } }, { type: "text", text: question }];
    const thumb = document.createElement("img"); thumb.src = imageUrl; thumb.className = "thumb"; user.append(thumb);
    imageSent = true;
  }
  messages.push({ role: "user", content });
  const answer = addMessage("assistant", "");
  answer.dataset.chunks = "0";
  const text = answer.querySelector(".text");
  $("ask").disabled = true; $("status").textContent = "generating…";
  const body = { model: modelId, messages, stream: true, max_tokens: Number($("max-tokens").value) || 64,
                 temperature: Number($("temperature").value) || 0 };
  let full = "";
  try {
    const res = await fetch("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error((await res.json()).error.message);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if (typeof delta.content === "string" && delta.content) {
            full += delta.content; text.textContent = full;
            answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
          } else if (Array.isArray(delta.content)) {
            for (const part of delta.content) {
              if (part.type === "image_url") {
                const img = document.createElement("img"); img.src = part.image_url.url; img.className = "generated";
                answer.append(img);
              }
            }
          }
          if (delta.vlbridge && delta.vlbridge.boxes) drawBoxes(delta.vlbridge.boxes);
        }
      }
    }
    messages.push({ role: "assistant", content: full });
    if (!full && !answer.querySelector("img")) { text.textContent = "(empty answer)"; answer.classList.add("empty"); }
    $("status").textContent = "";
  } catch (err) {
    answer.className = "msg error"; text.textContent = String(err.message || err);
    messages.pop();
    $("status").textContent = "";
  } finally {
    answer.dataset.done = "true";
    $("ask").disabled = false;
  }
}

$("image-input").addEventListener("change", (e) => setImage(e.target.files[0]));
$("clear-image").addEventListener("click", () => { imageUrl = null; $("stage").classList.remove("has-image"); newChat(); });
$("stage").addEventListener("dragover", (e) => e.preventDefault());
$("stage").addEventListener("drop", (e) => { e.preventDefault(); setImage(e.dataTransfer.files[0]); });
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
  if (item) setImage(item.getAsFile());
});
$("ask-form").addEventListener("submit", (e) => { e.preventDefault(); const q = $("prompt").value; $("prompt").value = ""; ask(q); });
$("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask-form").requestSubmit(); } });
$("grounded").addEventListener("click", () => ask(GROUNDED_PROMPT));
$("reset").addEventListener("click", newChat);
loadCard().catch((err) => { $("card-name").textContent = "cannot load the model card: " + err; });
