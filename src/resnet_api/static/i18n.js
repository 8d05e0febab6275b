// The Web UI's languages, shared by its pages (index.html and classifiers.html): which one to show, its
// messages, t() and the language menu. One storage key for all pages, so a choice made on one holds on the others.

// To add a language: add i18n/<tag>.json with the same keys (tests/ui/test_static_ui.py checks them) and list it here.
export const LANGUAGES = { en: "English", "zh-CN": "简体中文" };
const STORAGE_KEY = "resnet-api.lang";
const current = { lang: "en", messages: {} }; // English is also written into the HTML, so it shows before any fetch
let switches = 0; // counts useLang calls, so a slow earlier choice never lands after a later one

export const currentLang = () => current.lang;

// The choice remembered from any page, else the first of the browser's languages the UI has, else English.
export function pickLang() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (Object.hasOwn(LANGUAGES, saved)) return saved;
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const primary = tag.split("-")[0].toLowerCase(); // by primary subtag: en-GB gets en, zh-TW gets zh-CN
    const match = Object.keys(LANGUAGES).find((code) => code.split("-")[0].toLowerCase() === primary);
    if (match) return match;
  }
  return "en";
}

export function t(key, vars = {}) {
  const text = current.messages[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

// The strings written in the HTML: each element names its key in data-i18n (its text), data-i18n-aria-label,
// data-i18n-title or data-i18n-placeholder. Copies of a <template> are not in the document: translate them when added.
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const attr of ["aria-label", "title", "placeholder"]) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
  }
}

// Loads a language and translates the page's HTML into it; false, and nothing changes, if its file cannot be fetched.
export async function useLang(lang) {
  const menu = document.getElementById("lang");
  const id = ++switches;
  let messages;
  try {
    const response = await fetch(`i18n/${lang}.json`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    messages = await response.json();
  } catch {
    if (id !== switches) return false; // a later choice owns the menu now
    if (menu) menu.value = current.lang; // server unreachable: the menu keeps naming the language shown
    return false;
  }
  if (id !== switches) return false; // a later choice was made while this one loaded: it decides
  Object.assign(current, { lang, messages });
  document.documentElement.lang = lang;
  if (menu) menu.value = lang;
  translate();
  return true;
}

const GLOBE =
  "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20Zm6.9 6h-3a15.7 15.7 0 0 0-1.4-3.9A8 8 0 0 1 18.9 8ZM12 4a13.6 13.6 0 0 1 1.9 4h-3.8A13.6 13.6 0 0 1 12 4ZM4.3 14a8.2 8.2 0 0 1 0-4h3.4a16.5 16.5 0 0 0 0 4Zm.8 2h3a15.7 15.7 0 0 0 1.4 3.9A8 8 0 0 1 5.1 16Zm3-8h-3a8 8 0 0 1 4.4-3.9A15.7 15.7 0 0 0 8.1 8ZM12 20a13.6 13.6 0 0 1-1.9-4h3.8A13.6 13.6 0 0 1 12 20Zm2.3-6H9.7a14.7 14.7 0 0 1 0-4h4.6a14.7 14.7 0 0 1 0 4Zm.2 5.9a15.7 15.7 0 0 0 1.4-3.9h3a8 8 0 0 1-4.4 3.9Zm1.8-5.9a16.5 16.5 0 0 0 0-4h3.4a8.2 8.2 0 0 1 0 4Z";

// The language menu, the same on every page: a labelled <select id="lang"> with a globe, put in place of the
// page's <span data-lang-menu> placeholder. Its label is translated with the rest of the page (data-i18n).
function buildLanguageMenu() {
  const svg = "http://www.w3.org/2000/svg";
  const icon = document.createElementNS(svg, "svg");
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("aria-hidden", "true");
  icon.setAttribute("focusable", "false");
  const path = document.createElementNS(svg, "path");
  path.setAttribute("d", GLOBE);
  path.setAttribute("fill", "currentColor");
  icon.append(path);
  // English until the page's language is loaded, as the rest of the HTML
  const text = current.messages["lang.label"] ?? "Language";
  const name = Object.assign(document.createElement("span"), { className: "visually-hidden", textContent: text });
  name.dataset.i18n = "lang.label";
  const menu = Object.assign(document.createElement("select"), { id: "lang" });
  menu.append(...Object.entries(LANGUAGES).map(([code, label]) => Object.assign(new Option(label, code), { lang: code })));
  const label = Object.assign(document.createElement("label"), { className: "lang" });
  label.append(name, icon, menu);
  document.querySelector("[data-lang-menu]").replaceWith(label);
  return menu;
}

// Builds the page's language menu from LANGUAGES; a choice there is remembered, then handed to onChoose.
// A choice made in another tab of the UI is handed to onChoose too, so open tabs follow it without a reload
// (the browser tells the other tabs, never the one that wrote).
export function wireLanguageMenu(onChoose) {
  const menu = buildLanguageMenu();
  menu.value = current.lang;
  menu.addEventListener("change", () => {
    localStorage.setItem(STORAGE_KEY, menu.value);
    onChoose(menu.value);
  });
  window.addEventListener("storage", ({ key, newValue }) => {
    if (key === STORAGE_KEY && Object.hasOwn(LANGUAGES, newValue) && newValue !== current.lang) onChoose(newValue);
  });
}

// A failed API call in plain words, the messages both pages share: `error` is {status, code, retryAfter}
// (status 0: no answer). `own` maps an error code or an HTTP status to the page's own key; codes are checked
// first, statuses after the network and 503 cases.
export function errorText({ status, code = "", retryAfter = 1 }, own = {}) {
  if (code && Object.hasOwn(own, code)) return t(own[code]);
  if (status === 0) return t("error.network");
  if (status === 503) return code === "not_ready" ? t("error.notReady") : t("error.busy", { seconds: retryAfter || 1 });
  if (Object.hasOwn(own, status)) return t(own[status]);
  const key = { 400: "error.corrupt", 401: "error.needsKey", 413: "error.tooLarge", 415: "error.notImage", 422: "error.invalid" }[status];
  return key ? t(key) : t("error.server", { status });
}
