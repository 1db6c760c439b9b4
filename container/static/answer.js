// Pure helpers for the page: turning the service's answer (docs/response.md) into words, numbers and SVG
// paths, and the page's options into X-Amzn-SageMaker-Custom-Attributes. No DOM here, so the browser test
// can call every function on hand-made inputs (window.CarDamageAnswer).
"use strict";

(function () {
  // Outline dash patterns, one per type (by the type's position among the types served): with the type's
  // letter on each outline, the type never rests on colour alone.
  const DASHES = ["", "10 5", "3 4", "12 4 3 4", "1 6"];

  function plural(word, count) {
    if (count === 1) return word;
    if (/(s|x|z|ch|sh)$/.test(word)) return word + "es";
    if (/[^aeiou]y$/.test(word)) return word.slice(0, -1) + "ies";
    return word + "s";
  }

  // "3 damages: 2 scratches, 1 dent" (most frequent type first, ties by name); "No damage found" for none.
  function countSentence(damages) {
    if (!damages.length) return "No damage found";
    const byType = new Map();
    for (const damage of damages) byType.set(damage.type, (byType.get(damage.type) || 0) + 1);
    const parts = [...byType.entries()]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([type, count]) => `${count} ${plural(type.replace(/_/g, " "), count)}`);
    return `${damages.length} ${plural("damage", damages.length)}: ${parts.join(", ")}`;
  }

  // The lowest score the answer can contain: every model applied its own min_score (models[].min_score).
  function appliedThreshold(answer) {
    const thresholds = (answer.models || []).map((m) => m.min_score).filter((v) => typeof v === "number");
    return thresholds.length ? Math.max(...thresholds) : 0;
  }

  // A higher min_score than the answer's can be applied here; a lower one needs a new request, and so does
  // going back to the models' defaults (null) from an answer made with an explicit min_score.
  function canFilterLocally(answer, minScore) {
    if (minScore === null) return answer.options.min_score === null;
    return minScore >= appliedThreshold(answer);
  }

  function visibleDamages(answer, minScore) {
    if (minScore === null) return answer.damages;
    return answer.damages.filter((damage) => damage.score >= minScore);
  }

  // {min_score: 0.3, types: ["scratch"], frame_width: 14, ...} -> "min_score=0.3;types=scratch;...";
  // null, undefined and "" values are left out (the service then uses its defaults).
  function customAttributes(options) {
    return Object.entries(options)
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([key, value]) => `${key}=${encodeURIComponent(Array.isArray(value) ? value.join(",") : value)}`)
      .join(";");
  }

  function formatNumber(value, digits) {
    return Number(value).toLocaleString("en-US", {maximumFractionDigits: digits});
  }

  function formatPercent(fraction) {
    return `${formatNumber(fraction * 100, 2)} %`;
  }

  function formatArea(area) {
    return area ? `${formatNumber(area.value, 3)} ${area.unit.replace("^2", "²")}` : "";
  }

  function formatBytes(bytes) {
    if (bytes >= 1024 * 1024) return `${formatNumber(bytes / (1024 * 1024), 1)} MiB`;
    if (bytes >= 1024) return `${formatNumber(bytes / 1024, 1)} KiB`;
    return `${bytes} bytes`;
  }

  // A damage's length or width (docs/response.md): along the stroke for scratches (damage.stroke), else the
  // sides of its oriented box; in the calibration's unit when the answer has one, else in pixels. null when
  // the answer carries neither.
  function measurement(damage, key) {
    const source = damage.stroke || damage.oriented_box;
    if (!source) return null;
    const calibrated = source[key];
    if (calibrated && typeof calibrated.value === "number") {
      return `${formatNumber(calibrated.value, 3)} ${calibrated.unit}`;
    }
    const pixels = source[`${key}_px`];
    return typeof pixels === "number" ? `${formatNumber(pixels, 1)} px` : null;
  }

  // Rings of [x, y] pixel-corner points -> one SVG path (exteriors and holes; fill-rule evenodd).
  function polygonPath(polygons) {
    return polygons
      .map((rings) => rings.map((ring) => `M${ring.map(([x, y]) => `${x} ${y}`).join("L")}Z`).join(""))
      .join("");
  }

  // One short, distinct label per type: its first letter, or more letters where two types share one.
  function typeLetters(types) {
    const letters = {};
    for (const type of types) {
      let length = 1;
      const taken = () => Object.values(letters).includes(type.slice(0, length).toUpperCase());
      while (length < type.length && taken()) length += 1;
      letters[type] = type.slice(0, length).toUpperCase();
    }
    return letters;
  }

  function typeDash(types, type) {
    const index = types.indexOf(type);
    return DASHES[(index < 0 ? types.length : index) % DASHES.length];
  }

  // The service's error answer in words. body is its JSON ({error, detail}) or null.
  function errorMessage(status, body, context) {
    const detail = body && body.detail ? body.detail : "";
    const code = body && body.error ? body.error : "";
    if (status === 413) {
      const limit = context.limits && context.limits.max_body_bytes;
      if (limit && context.size > limit) {
        return `Too big: this photo is ${formatBytes(context.size)}; the service takes at most ` +
          `${formatBytes(limit)} per photo.`;
      }
      return `Too big: ${detail || "the photo exceeds the service's limit"}.`;
    }
    if (status === 415 || code === "invalid_image") {
      return "Not an image: the service reads JPEG, PNG, WebP, BMP and TIFF photos" +
        (detail ? ` (${detail}).` : ".");
    }
    if (status === 503) return "Model loading: the photo will be sent again as soon as the model is ready.";
    if (code === "invalid_option") return `An option was refused: ${detail}`;
    return `The service answered ${status}${code ? ` ${code}` : ""}${detail ? `: ${detail}` : "."}`;
  }

  window.CarDamageAnswer = {
    plural, countSentence, appliedThreshold, canFilterLocally, visibleDamages, customAttributes,
    formatNumber, formatPercent, formatArea, formatBytes, measurement, polygonPath, typeLetters, typeDash,
    errorMessage,
  };
})();
