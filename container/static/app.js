// The page: photo in (pick, drop, paste) -> POST /invocations -> outlines, table, counts, downloads.
// Options travel in X-Amzn-SageMaker-Custom-Attributes, exactly as SageMaker callers send them.
"use strict";

(function () {
  const A = window.CarDamageAnswer;
  const V = window.CarDamageView;
  const PING_RETRY_MS = 1000;
  const $ = (id) => document.getElementById(id);

  const state = {
    ready: false,
    info: null, // GET /models
    file: null,
    bytes: null, // the photo read once, sent again as is on every option change
    photoUrl: null,
    answer: null,
    startedAt: 0, // performance.now() of the drop / pick / paste / option change being answered
    pendingQuery: false, // a request to resend once /ping says ready
    requestSerial: 0,
  };

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.dataset.state = kind;
  }

  function showMessage(text) {
    const message = $("message");
    message.textContent = text || "";
    message.hidden = !text;
  }

  const element = V.element;

  // --- Readiness: /ping 503 -> "model loading", retried until 200 -------------------------------------
  async function pollPing() {
    let status = 0;
    try {
      status = (await fetch("/ping", {cache: "no-store"})).status;
    } catch (error) {
      status = 0;
    }
    if (status === 200) {
      await loadInfo();
      return;
    }
    state.ready = false;
    setStatus(status === 503 ? "Model loading… (checking again every second)"
      : "Cannot reach the service; retrying…", status === 503 ? "loading" : "offline");
    window.setTimeout(pollPing, PING_RETRY_MS);
  }

  async function loadInfo() {
    const response = await fetch("/models", {cache: "no-store"});
    if (!response.ok) {
      window.setTimeout(pollPing, PING_RETRY_MS);
      return;
    }
    state.info = await response.json();
    state.ready = true;
    buildControls(state.info);
    showModels(state.info.models);
    setStatus(`Ready: ${state.info.damage_types.join(", ")}`, "ready");
    if (state.pendingQuery) query();
  }

  function buildControls(info) {
    const types = $("types");
    types.querySelectorAll("label").forEach((node) => node.remove());
    for (const type of info.damage_types) {
      const label = element("label", null, "check");
      const box = element("input");
      box.type = "checkbox";
      box.value = type;
      box.checked = true;
      box.name = "type";
      label.append(box, ` ${type}`);
      types.append(label);
    }
    const unit = $("unit");
    unit.replaceChildren(...info.option_ranges.units.map((name) => {
      const option = element("option", name);
      option.value = name;
      option.selected = name === info.option_ranges.default_unit;
      return option;
    }));
    const [low, high] = info.option_ranges.polygon_tolerance;
    const tolerance = $("tolerance");
    tolerance.min = low;
    tolerance.max = high;
    tolerance.placeholder = String(info.option_ranges.default_polygon_tolerance);
  }

  function showModels(models) {
    $("models").replaceChildren(...models.map((m) => element("li",
      `${m.type}: ${m.name}, version ${m.version}, backbone ${m.backbone}, min_score ${m.min_score}`)));
  }

  // --- Options ------------------------------------------------------------------------------------------
  function numberOrNull(id) {
    const text = $(id).value.trim();
    return text === "" ? null : Number(text);
  }

  function requestOptions() {
    const options = {min_score: numberOrNull("min-score"), polygon_tolerance: numberOrNull("tolerance")};
    if (state.info) {
      const checked = [...document.querySelectorAll("#types input:checked")].map((box) => box.value);
      if (checked.length !== state.info.damage_types.length) options.types = checked;
    }
    const method = $("calibration").value;
    if (method === "frame") {
      options.frame_width = numberOrNull("frame-width");
      options.frame_height = numberOrNull("frame-height");
    } else if (method === "pixels_per_unit") {
      options.pixels_per_unit = numberOrNull("pixels-per-unit");
    }
    if (method !== "none") options.unit = $("unit").value;
    return options;
  }

  // Words for options the service would refuse anyway, said before sending anything.
  function optionProblem(options) {
    if (options.types && !options.types.length) return "Pick at least one damage type.";
    const method = $("calibration").value;
    if (method === "frame" && !(options.frame_width > 0 && options.frame_height > 0)) {
      return "Give the frame's width and height (both positive) to calibrate areas.";
    }
    if (method === "pixels_per_unit" && !(options.pixels_per_unit > 0)) {
      return "Give a positive number of pixels per unit to calibrate areas.";
    }
    return "";
  }

  function onOptionChange(event) {
    state.startedAt = performance.now();
    const method = $("calibration").value;
    $("frame-fields").hidden = method !== "frame";
    $("ppu-fields").hidden = method !== "pixels_per_unit";
    $("unit-fields").hidden = method === "none";
    if (!state.file) return;
    const minScore = numberOrNull("min-score");
    if (event.target.id === "min-score" && state.answer && A.canFilterLocally(state.answer, minScore)) {
      draw(); // a stricter threshold than the answer's: no new request needed
      return;
    }
    query();
  }

  // --- The request ----------------------------------------------------------------------------------------
  function contentType(file) {
    return file.type || "application/octet-stream"; // the service sniffs the bytes; the type is a hint
  }

  function postPhoto(accept) {
    return fetch("/invocations", {
      method: "POST",
      body: state.bytes,
      headers: {
        "Content-Type": contentType(state.file),
        "Accept": accept,
        "X-Amzn-SageMaker-Custom-Attributes": A.customAttributes(requestOptions()),
      },
    });
  }

  async function errorBody(response) {
    try {
      return await response.json();
    } catch (error) {
      return null;
    }
  }

  async function query() {
    const options = requestOptions();
    const problem = optionProblem(options);
    if (problem) {
      showMessage(problem);
      return;
    }
    if (!state.ready) {
      state.pendingQuery = true;
      showMessage("Model loading: the photo will be sent as soon as the model is ready.");
      return;
    }
    state.pendingQuery = false;
    const serial = ++state.requestSerial;
    document.body.dataset.busy = "true";
    setStatus("Analysing the photo…", "busy");
    let response;
    try {
      response = await postPhoto("application/json");
    } catch (error) {
      if (serial === state.requestSerial) fail("Cannot reach the service: the request did not get an answer.");
      return;
    }
    if (serial !== state.requestSerial) return; // a newer photo or option change is on its way
    if (!response.ok) {
      const body = await errorBody(response);
      if (response.status === 503) {
        state.pendingQuery = true;
        state.ready = false;
        window.setTimeout(pollPing, PING_RETRY_MS);
      }
      fail(A.errorMessage(response.status, body, {limits: state.info && state.info.limits,
        size: state.file.size}), response.status);
      return;
    }
    state.answer = await response.json();
    showMessage("");
    setStatus(`Ready: ${state.info.damage_types.join(", ")}`, "ready");
    draw();
  }

  function fail(text, status) {
    delete document.body.dataset.busy;
    state.answer = null;
    clearResult();
    showMessage(text);
    document.body.dataset.errorStatus = String(status || 0);
    if (state.ready) setStatus(`Ready: ${state.info.damage_types.join(", ")}`, "ready");
  }

  function clearResult() {
    $("overlay").replaceChildren();
    $("damages").tBodies[0].replaceChildren();
    $("damages").tHead.replaceChildren();
    $("summary").textContent = state.file ? "No answer for this photo." : "No photo yet.";
    $("totals").textContent = "";
    $("legend").replaceChildren();
    $("download-json").disabled = true;
    $("download-png").disabled = true;
  }

  // --- Photo in ------------------------------------------------------------------------------------------
  async function takeFile(file) {
    if (!file) return;
    state.startedAt = performance.now();
    state.file = file;
    state.answer = null;
    $("photo-name").textContent = `${file.name || "pasted image"} (${A.formatBytes(file.size)})`;
    state.bytes = await file.arrayBuffer();
    if (state.file !== file) return; // another photo came in while this one was read
    delete document.body.dataset.errorStatus;
    if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
    state.photoUrl = URL.createObjectURL(file);
    $("photo").src = state.photoUrl;
    $("photo-note").hidden = true;
    $("figure").hidden = false;
    clearResult();
    query();
  }

  // Browsers cannot show TIFF (and some BMP variants): show the service's annotated PNG of it instead.
  async function photoFallback() {
    if (!state.file || $("photo").src !== state.photoUrl) return;
    const response = await postPhoto("image/png");
    if (!response.ok) return;
    $("photo").src = URL.createObjectURL(await response.blob());
    $("photo-note").hidden = false;
  }

  function photoReady() {
    const photo = $("photo");
    if (photo.complete && photo.naturalWidth) return Promise.resolve();
    return new Promise((resolve) => {
      photo.addEventListener("load", resolve, {once: true});
      photo.addEventListener("error", resolve, {once: true});
    });
  }

  // --- Drawing -------------------------------------------------------------------------------------------
  function servedTypes() {
    return state.info ? state.info.damage_types : [...new Set(state.answer.damages.map((d) => d.type))];
  }

  async function draw() {
    const answer = state.answer;
    await photoReady();
    if (answer !== state.answer) return;
    const minScore = numberOrNull("min-score");
    const damages = A.visibleDamages(answer, A.canFilterLocally(answer, minScore) ? minScore : null);
    const types = servedTypes();
    const look = {types, letters: A.typeLetters(types),
      colour: (type) => (state.info && state.info.colours[type]) || "#ff00ff"};
    V.drawOutlines(answer, damages, look);
    V.drawLegend(look);
    V.drawTable(answer, damages, look);
    $("summary").textContent = A.countSentence(damages);
    V.drawTotals(answer, minScore, damages.length !== answer.damages.length);
    if (answer.models) showModels(answer.models);
    $("download-json").disabled = false;
    $("download-png").disabled = false;
    const started = state.startedAt;
    // Two frames: the first callback runs before the paint, the second after it.
    requestAnimationFrame(() => requestAnimationFrame(() => {
      const elapsed = performance.now() - started;
      const t = answer.timings_ms || {};
      $("timing").textContent = `Drop to drawn: ${Math.round(elapsed)} ms (service: ${Math.round(t.total || 0)} ms, ` +
        `of which model ${Math.round(t.inference || 0)} ms).`;
      document.body.dataset.dropToDrawnMs = elapsed.toFixed(1);
      document.body.dataset.drawn = String(state.requestSerial);
      delete document.body.dataset.busy;
    }));
  }

  // --- Downloads -----------------------------------------------------------------------------------------
  function download(blob, name) {
    const link = element("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  function baseName() {
    return (state.file && state.file.name ? state.file.name.replace(/\.[^.]*$/, "") : "photo") || "photo";
  }

  async function downloadPng() {
    const response = await postPhoto("image/png");
    if (!response.ok) {
      showMessage(A.errorMessage(response.status, await errorBody(response), {limits: state.info.limits,
        size: state.file.size}));
      return;
    }
    download(await response.blob(), `${baseName()}-annotated.png`);
  }

  // --- Wiring --------------------------------------------------------------------------------------------
  function init() {
    $("file").addEventListener("change", (event) => {
      takeFile(event.target.files[0]);
      event.target.value = ""; // so that picking the same photo again sends it again
    });
    const zone = $("dropzone");
    document.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    document.addEventListener("dragleave", () => zone.classList.remove("over"));
    document.addEventListener("drop", (event) => {
      event.preventDefault(); // never let the browser navigate to the dropped file
      zone.classList.remove("over");
      takeFile(event.dataTransfer.files[0]);
    });
    document.addEventListener("paste", (event) => {
      const file = [...(event.clipboardData ? event.clipboardData.files : [])][0];
      if (file) takeFile(file);
    });
    $("options").addEventListener("change", onOptionChange);
    $("options").addEventListener("submit", (event) => event.preventDefault());
    $("photo").addEventListener("error", photoFallback);
    $("download-json").addEventListener("click", () => download(
      new Blob([JSON.stringify(state.answer, null, 1)], {type: "application/json"}), `${baseName()}.json`));
    $("download-png").addEventListener("click", downloadPng);
    pollPing();
  }

  init();
})();
