// The page's chat view for generative runs: a conversation with the selected model over the server's
// OpenAI-compatible /v1/chat/completions, streamed (server-sent events) and drawn token by token.
// Uses app.js's $, headers and showError (plain scripts share one global scope; app.js loads first).
"use strict";

const conversation = [];  // {role, content} in order, the system message excluded
let streaming = null;      // the AbortController of the answer being streamed

function messageBox(role, text) {
  const box = document.createElement("div");
  box.className = "msg " + role;
  box.dataset.role = role;
  const body = document.createElement("span");
  body.className = "content";
  body.textContent = text;
  box.append(body);
  $("chat-log").append(box);
  box.scrollIntoView({ block: "end" });
  return box;
}

function chatSettings() {
  const settings = { max_tokens: parseInt($("max-tokens").value, 10) || 256,
                     temperature: parseFloat($("temperature").value), top_p: parseFloat($("top-p").value) };
  if (Number.isNaN(settings.temperature)) delete settings.temperature;
  if (Number.isNaN(settings.top_p)) delete settings.top_p;
  return settings;
}

// Server-sent events from a fetch body: every "data: ..." line, "[DONE]" included, to onData.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop();
    for (const line of lines) if (line.startsWith("data:")) onData(line.slice(5).trimStart());
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || streaming) return;
  conversation.push({ role: "user", content: text });
  messageBox("user", text);
  $("chat-input").value = "";
  const system = $("system").value.trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat(conversation);
  const answer = messageBox("assistant", "");
  answer.classList.add("streaming");
  const content = answer.querySelector(".content");
  streaming = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("chat-status").textContent = "waiting…";
  const started = performance.now();
  let firstAt = null, usage = null, finish = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: streaming.signal,
      body: JSON.stringify(Object.assign({ model: $("model").value, messages, stream: true,
                                           stream_options: { include_usage: true } }, chatSettings())) });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(((body.error || {}).message || response.statusText) +
                      (response.status === 401 ? " (enter the API key above)" : ""));
    }
    await readEvents(response, (data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const piece = (choice.delta || {}).content;
        if (piece) {
          if (firstAt === null) firstAt = performance.now();
          content.textContent += piece;
          $("chat-status").textContent = "answering…";
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
    showError("");
  } catch (err) {
    if (err.name !== "AbortError") showError(err.message);
    else finish = "stopped";
  } finally {
    answer.classList.remove("streaming");
    streaming = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
  if (content.textContent) conversation.push({ role: "assistant", content: content.textContent });
  const seconds = (performance.now() - started) / 1000;
  const parts = [];
  if (usage) parts.push(`${usage.completion_tokens} tokens in ${seconds.toFixed(2)} s`);
  if (firstAt !== null) parts.push(`first token ${Math.round(firstAt - started)} ms`);
  if (finish) parts.push(finish === "length" ? "cut at max tokens" : finish);
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = parts.join(" · ");
  answer.append(meta);
  answer.dataset.finish = finish || "";
  $("chat-status").textContent = "";
}

function clearConversation() {
  if (streaming) streaming.abort();
  conversation.length = 0;
  $("chat-log").replaceChildren();
}

document.addEventListener("DOMContentLoaded", () => {
  $("chat-form").addEventListener("submit", send);
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => { if (streaming) streaming.abort(); });
  $("clear").addEventListener("click", clearConversation);
  $("model").addEventListener("change", clearConversation);
});
