// The page: pick a known user or type a history, see the top-k beside it. Only the public API is used.
"use strict";
const $ = (id) => document.getElementById(id);
let card = null;
let titleColumn = null;

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) {
    const error = body.error || {};
    throw new Error(error.message || response.statusText);
  }
  return body;
}

function post(path, payload) {
  return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
}

function title(meta) {
  return meta && titleColumn ? meta[titleColumn] : "";
}

function showHistory(items, metadata) {
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  items.forEach((item, i) => {
    const row = document.createElement("tr");
    row.dataset.item = String(item);
    cell(row, i + 1);
    cell(row, item);
    cell(row, title(metadata && metadata[i]), "meta");
    body.appendChild(row);
  });
  $("history-count").textContent = `(${items.length} items)`;
}

function showResults(result) {
  const body = $("results").querySelector("tbody");
  body.replaceChildren();
  result.items.forEach((item, i) => {
    const row = document.createElement("tr");
    row.dataset.item = String(item);
    cell(row, i + 1);
    cell(row, item);
    cell(row, title(result.metadata && result.metadata[i]), "meta");
    cell(row, result.scores[i].toFixed(4), "score");
    body.appendChild(row);
  });
  const notes = [];
  if (result.unknown_items.length) notes.push(`ignored unknown items: ${result.unknown_items.join(", ")}`);
  notes.push(...result.warnings);
  status(`${result.items.length} recommendations from ${result.model}` + (notes.length ? ` — ${notes.join("; ")}` : ""));
}

function parseHistory(text) {
  // ids are sent as typed: the service matches "12" to item 12 when the catalogue's ids are numbers
  return text.split(/[\s,]+/).filter(Boolean);
}

function ranking() {
  return { k: Number($("k").value) || 10, exclude_seen: $("exclude-seen").checked, metadata: true };
}

async function recommendHistory(event) {
  event.preventDefault();
  const history = parseHistory($("history-input").value);
  if (!history.length) return status("type at least one item id", true);
  try {
    status("ranking…");
    const result = await post("/v1/recommend", { history, ...ranking() });
    showHistory(history, result.history_metadata);
    showResults(result);
  } catch (error) {
    status(error.message, true);
  }
}

async function recommendUser(event) {
  event.preventDefault();
  const user = $("user-input").value.trim();
  if (!user) return status("type a user id", true);
  const { k, exclude_seen } = ranking();
  try {
    status("ranking…");
    const id = encodeURIComponent(user);
    const [history, result] = await Promise.all([
      api(`/v1/users/${id}?metadata=true`),
      api(`/v1/users/${id}/recommendations?k=${k}&exclude_seen=${exclude_seen}&metadata=true`),
    ]);
    showHistory(history.history, history.metadata);
    showResults(result);
  } catch (error) {
    status(error.message, true);
  }
}

let userTimer = null;
function suggestUsers() {
  clearTimeout(userTimer);
  userTimer = setTimeout(async () => {
    const q = encodeURIComponent($("user-input").value.trim());
    const found = await api(`/v1/users?limit=20&q=${q}`).catch(() => ({ users: [] }));
    $("user-list").replaceChildren(...found.users.map((u) => Object.assign(document.createElement("option"), { value: u })));
  }, 150);
}

let itemTimer = null;
function searchItems() {
  clearTimeout(itemTimer);
  itemTimer = setTimeout(async () => {
    const q = $("item-search").value.trim();
    const list = $("item-hits");
    if (!q) return list.replaceChildren();
    const found = await api(`/v1/items?limit=20&q=${encodeURIComponent(q)}`).catch(() => ({ items: [] }));
    list.replaceChildren(...found.items.map((item) => {
      const li = document.createElement("li");
      const label = document.createElement("span");
      label.textContent = titleColumn && item[titleColumn] ? `${item.item_id} — ${item[titleColumn]}` : String(item.item_id);
      const add = document.createElement("button");
      add.type = "button";
      add.textContent = "add";
      add.addEventListener("click", () => {
        const box = $("history-input");
        box.value = box.value.trim() ? `${box.value.trim()}, ${item.item_id}` : String(item.item_id);
      });
      li.append(label, add);
      return li;
    }));
  }, 150);
}

function tab(which) {
  const user = which === "user";
  $("tab-user").setAttribute("aria-selected", String(user));
  $("tab-history").setAttribute("aria-selected", String(!user));
  $("user-form").hidden = !user;
  $("history-form").hidden = user;
}

function showCard() {
  const summary = $("card-summary");
  const test = card.test && card.test.metrics ? card.test.metrics : (card.test || {});
  const rows = [["model", `${card.name} (${card.id}, ${card.backend})`], ["items", card.n_items], ["users", card.n_users],
    ["run directory", card.run_dir], ["data fingerprint", card.training_data.fingerprint_sha256.slice(0, 16)],
    ["appended events", `${card.appended.events} (${card.appended.users} users)`]];
  for (const [name, value] of Object.entries(test)) {
    if (typeof value === "number") rows.push([`test ${name}`, value.toFixed(4)]);
  }
  summary.replaceChildren(...rows.flatMap(([name, value]) => [
    Object.assign(document.createElement("dt"), { textContent: name }),
    Object.assign(document.createElement("dd"), { textContent: String(value) }),
  ]));
  $("card-json").textContent = JSON.stringify(card, null, 2);
}

async function start() {
  try {
    card = await api("/v1/model");
  } catch (error) {
    return status(`the service did not answer: ${error.message}`, true);
  }
  titleColumn = card.title_column;
  document.body.classList.toggle("has-meta", Boolean(titleColumn));
  $("model-id").textContent = `${card.name} · ${card.n_items} items · ${card.id}`;
  showCard();
  $("card-toggle").addEventListener("click", () => { $("card").hidden = !$("card").hidden; });
  $("tab-user").addEventListener("click", () => tab("user"));
  $("tab-history").addEventListener("click", () => tab("history"));
  $("user-form").addEventListener("submit", recommendUser);
  $("history-form").addEventListener("submit", recommendHistory);
  $("user-input").addEventListener("input", suggestUsers);
  $("item-search").addEventListener("input", searchItems);
  document.body.dataset.ready = "true";
  suggestUsers();
}

start();
