// The public REST API, with the bearer token kept in sessionStorage: requests, errors, files, paths.

import { element } from "./ui.js";

const TOKEN_KEY = "anomaly.token";
// How often the page polls an analysis or a training in progress.
export const POLL_MS = 400;

let sessionEnded = () => {};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

// What to do when the service answers 401 to a signed-in tab (the token expired or its account is gone).
export function onSessionEnded(handler) {
  sessionEnded = handler;
}

// FastAPI's validation errors carry a list of problems; the service's own errors a sentence.
function describeDetail(detail, fallback) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${(item.loc || []).slice(-1)[0] || "request"}: ${item.msg}`).join("; ");
  }
  return fallback;
}

export function parseDetail(text, status) {
  const fallback = `The server answered ${status}.`;
  try {
    return describeDetail(JSON.parse(text).detail, fallback);
  } catch {
    return fallback;
  }
}

export async function request(path, { method = "GET", json, form } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new URLSearchParams(form);
  }
  const response = await fetch(path, { method, headers, body });
  if (response.status === 401 && token()) sessionEnded();
  if (!response.ok) {
    throw new ApiError(response.status, parseDetail(await response.text(), response.status));
  }
  return response;
}

export async function api(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

// Files come through fetch, since a link or an <img> cannot send the bearer header.
export async function fetchFile(path, fallbackName) {
  const response = await request(path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const filename = (disposition.match(/filename="?([^";]+)"?/) || [])[1] || fallbackName;
  return { blob: await response.blob(), filename };
}

// Downloads a file to the browser's downloads; its name as the service gives it.
export async function saveFile(path, fallbackName) {
  const { blob, filename } = await fetchFile(path, fallbackName);
  const url = URL.createObjectURL(blob);
  const link = element("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return filename;
}

export function datasetPath(id, rest = "") {
  return `/api/anomaly/datasets/${encodeURIComponent(id)}${rest}`;
}

export function modelPath(name, rest = "") {
  return `/api/anomaly/models/${encodeURIComponent(name)}${rest}`;
}

export function trainingPath(id) {
  return `/api/anomaly/trainings/${encodeURIComponent(id)}`;
}
