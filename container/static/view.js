// Drawing the answer: the SVG outlines over the photo, the legend, the table and the totals line. Each type
// is drawn with a colour (look.colour), a dash pattern and a letter; outlines and rows light each other up.
"use strict";

(function () {
  const A = window.CarDamageAnswer;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function highlight(id, on) {
    document.querySelectorAll(`[data-damage="${id}"]`).forEach((node) => node.classList.toggle("hot", on));
  }

  function linkHighlight(node, id) {
    node.dataset.damage = String(id);
    node.addEventListener("mouseenter", () => highlight(id, true));
    node.addEventListener("mouseleave", () => highlight(id, false));
    node.addEventListener("focus", () => highlight(id, true));
    node.addEventListener("blur", () => highlight(id, false));
  }

  function svgNode(tag, attributes) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    return node;
  }

  function drawOutlines(answer, damages, look) {
    const {letters, types} = look;
    const {width, height} = answer.image;
    const overlay = $("overlay");
    overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
    // Labels about 12 screen pixels high whatever the photo's size (the SVG scales with the photo).
    const fontSize = 12 * (width / Math.max(1, $("photo").clientWidth || width));
    const nodes = [];
    for (const damage of damages) {
      const label = `${letters[damage.type]}${damage.id}`;
      const path = svgNode("path", {
        "d": A.polygonPath(damage.polygons), "class": "outline", "tabindex": 0, "role": "img",
        "fill-rule": "evenodd", "stroke-dasharray": A.typeDash(types, damage.type),
        "aria-label": `Damage ${damage.id}: ${damage.type}, score ${damage.score}, ${damage.area_px} px`,
      });
      path.style.stroke = look.colour(damage.type); // CSSOM, allowed by the style-src policy
      path.style.fill = look.colour(damage.type);
      linkHighlight(path, damage.id);
      const text = svgNode("text", {"x": damage.bbox.x + 2, "y": damage.bbox.y + fontSize, "class": "tag",
        "font-size": fontSize.toFixed(2), "stroke-width": (fontSize / 4).toFixed(2), "aria-hidden": "true"});
      text.textContent = label;
      text.dataset.damage = String(damage.id);
      nodes.push(path, text);
    }
    overlay.replaceChildren(...nodes);
  }

  function drawLegend(look) {
    const {letters, types} = look;
    $("legend").replaceChildren(...types.map((type) => {
      const item = element("span", null, "key");
      const sample = svgNode("svg", {"width": 28, "height": 12, "aria-hidden": "true"});
      const line = svgNode("line", {"x1": 1, "y1": 6, "x2": 27, "y2": 6, "stroke-width": 3,
        "stroke-dasharray": A.typeDash(types, type)});
      line.style.stroke = look.colour(type);
      sample.append(line);
      item.append(sample, ` ${letters[type]} = ${type}`);
      return item;
    }));
  }

  function drawTable(answer, damages, look) {
    const {letters} = look;
    const calibrated = Boolean(answer.calibration);
    const hasLength = damages.some((d) => A.measurement(d, "length") !== null);
    const hasWidth = damages.some((d) => A.measurement(d, "width") !== null);
    const headings = ["ID", "Type", "Score", "Area px", "Area %"];
    if (calibrated) headings.push(`Area (${answer.calibration.unit}²)`);
    if (hasLength) headings.push("Length");
    if (hasWidth) headings.push("Width");
    const head = element("tr");
    head.append(...headings.map((text) => {
      const cell = element("th", text);
      cell.scope = "col";
      return cell;
    }));
    const table = $("damages");
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(...damages.map((damage) => {
      const row = element("tr");
      row.tabIndex = 0;
      const type = element("td");
      const letter = element("span", letters[damage.type], "letter");
      letter.style.borderColor = look.colour(damage.type);
      type.append(letter, ` ${damage.type}`);
      const cells = [element("td", String(damage.id)), type, element("td", damage.score.toFixed(4)),
        element("td", A.formatNumber(damage.area_px, 0)), element("td", A.formatPercent(damage.area_fraction))];
      if (calibrated) cells.push(element("td", A.formatArea(damage.area), "calibrated"));
      if (hasLength) cells.push(element("td", A.measurement(damage, "length") || "–"));
      if (hasWidth) cells.push(element("td", A.measurement(damage, "width") || "–"));
      row.append(...cells);
      linkHighlight(row, damage.id);
      return row;
    }));
  }

  function drawTotals(answer, minScore, filtered) {
    const totals = answer.totals;
    let text = `Damaged area (union): ${A.formatNumber(totals.area_px, 0)} px, ` +
      `${A.formatPercent(totals.area_fraction)} of the photo`;
    if (totals.area) text += `, ${A.formatArea(totals.area)}`;
    if (filtered) text += ` (for the answer's ${answer.damage_count} damages; the table shows score ≥ ${minScore})`;
    $("totals").textContent = `${text}.`;
  }

  window.CarDamageView = {element, drawOutlines, drawLegend, drawTable, drawTotals};
})();
