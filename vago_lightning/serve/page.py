"""The page at `/`: type a text, choose a voice, hear it while it streams, keep it as a WAV.

It calls the same OpenAI endpoint as any client (PCM, streamed): chunks are played with the Web
Audio API as they arrive, and when the answer is complete the audio element and the download link
get the whole WAV. Self-contained: no file, font or script from anywhere else.
"""

PAGE = """<!doctype html>
<html lang="hu">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vago_lightning: speak</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 textarea { width: 100%; min-height: 7rem; font: inherit; padding: .5rem; box-sizing: border-box; }
 .row { display: flex; gap: 1rem; flex-wrap: wrap; align-items: end; margin: .8rem 0; }
 label { display: flex; flex-direction: column; font-size: .9rem; gap: .2rem; }
 button { font: inherit; padding: .5rem 1.4rem; cursor: pointer; }
 #status { min-height: 1.4rem; color: #555; }
 #status.error { color: #b00020; }
 audio { width: 100%; margin-top: .6rem; }
 small { color: #666; }
</style>
</head>
<body>
<h1>Speak with the voice</h1>
<p><small>Use only voices you have the right to use. The same request from code:
<code>POST /v1/audio/speech</code> (OpenAI-compatible).</small></p>
<label for="text">Text <small>(up to 4,096 characters; long text is spoken sentence by sentence)</small></label>
<textarea id="text" maxlength="4096" placeholder="Jó estét kívánok, kezdődik a mai játék!"></textarea>
<div class="row">
 <label>Voice <select id="voice"></select></label>
 <label>Temperature <span><input id="temperature" type="range" min="0.1" max="1.0" step="0.05" value="0.65">
  <output id="temperature-value">0.65</output></span></label>
 <label>Speed <span><input id="speed" type="range" min="0.5" max="2.0" step="0.05" value="1.0">
  <output id="speed-value">1.00</output></span></label>
 <label id="key-box" hidden>API key <input id="key" type="password" autocomplete="off"></label>
 <button id="play" type="button">Play</button>
</div>
<div id="status"></div>
<audio id="player" controls></audio>
<p><a id="download" href="#" download="speech.wav" hidden>Download the WAV</a></p>
<script>
"use strict";
const RATE = 24000;
const $ = (id) => document.getElementById(id);
let modelId = "tts-1";

function headers() {
  const h = {"Content-Type": "application/json"};
  const key = $("key").value || sessionStorage.getItem("vago-key") || "";
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
function status(text, error) { $("status").textContent = text; $("status").className = error ? "error" : ""; }
async function errorText(response) {
  try { return (await response.json()).error.message; }
  catch (e) { return response.status + " " + response.statusText; }
}

async function loadVoices() {
  const response = await fetch("/v1/audio/voices", {headers: headers()});
  if (response.status === 401) { $("key-box").hidden = false; status("This server needs an API key.", true); return; }
  if (!response.ok) { status(await errorText(response), true); setTimeout(loadVoices, 3000); return; }
  const data = await response.json();
  if (data.auth) $("key-box").hidden = false;
  $("voice").replaceChildren(...data.voices.map((name) => new Option(name, name)));
  const models = await fetch("/v1/models", {headers: headers()});
  if (models.ok) modelId = (await models.json()).data[0].id;
  status(data.voices.length ? "" : "No voice: start the server with --voice NAME=WAV", !data.voices.length);
}

function wavBlob(chunks, length) {
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); header.setUint32(4, 36 + length, true); text(8, "WAVEfmt ");
  header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, RATE, true); header.setUint32(28, RATE * 2, true); header.setUint16(32, 2, true);
  header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, length, true);
  return new Blob([header, ...chunks], {type: "audio/wav"});
}

async function play() {
  const text = $("text").value.trim();
  if (!text) { status("Type a text first.", true); return; }
  if ($("key").value) sessionStorage.setItem("vago-key", $("key").value);
  $("play").disabled = true;
  const started = performance.now();
  status("Generating…");
  try {
    const response = await fetch("/v1/audio/speech", {
      method: "POST", headers: headers(),
      body: JSON.stringify({model: modelId, input: text, voice: $("voice").value, response_format: "pcm",
                            speed: Number($("speed").value), temperature: Number($("temperature").value)}),
    });
    if (!response.ok) { status(await errorText(response), true); return; }
    const context = new AudioContext({sampleRate: RATE});
    let at = context.currentTime + 0.1, carry = new Uint8Array(0), total = 0, first = null;
    const chunks = [];
    const reader = response.body.getReader();
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      const bytes = new Uint8Array(carry.length + value.length);
      bytes.set(carry); bytes.set(value, carry.length);
      const even = bytes.length - (bytes.length % 2);
      carry = bytes.slice(even);
      if (!even) continue;
      const pcm = new Int16Array(bytes.slice(0, even).buffer);
      chunks.push(pcm); total += even;
      if (first === null) {
        first = (performance.now() - started) / 1000;
        status("Playing (first audio after " + first.toFixed(2) + " s)…");
      }
      const buffer = context.createBuffer(1, pcm.length, RATE);
      const samples = buffer.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
      const source = context.createBufferSource();
      source.buffer = buffer; source.connect(context.destination);
      at = Math.max(at, context.currentTime); source.start(at); at += buffer.duration;
    }
    const url = URL.createObjectURL(wavBlob(chunks, total));
    $("player").src = url;
    $("download").href = url; $("download").hidden = false;
    const seconds = total / 2 / RATE;
    status("Done: " + seconds.toFixed(2) + " s of speech in " + ((performance.now() - started) / 1000).toFixed(2) +
           " s" + (first === null ? "" : ", first audio after " + first.toFixed(2) + " s") + ".");
  } catch (e) {
    status("Failed: " + e, true);
  } finally {
    $("play").disabled = false;
  }
}

for (const name of ["temperature", "speed"]) {
  $(name).addEventListener("input", () => { $(name + "-value").textContent = Number($(name).value).toFixed(2); });
}
$("play").addEventListener("click", play);
$("key").addEventListener("change", loadVoices);
loadVoices();
</script>
</body>
</html>
"""
