// muster's page: the group live in a browser, from the master's own API and nothing else.
//
// A snapshot (GET /v1/members) gives the members and the resume point (epoch, revision);
// an EventSource on /v1/events?from_revision=REVISION+1&epoch=EPOCH continues it with no
// gap. EventSource reconnects by itself after a network error and sends Last-Event-ID, so a
// master that restarts resumes the stream where it broke; when the master refuses the
// resume point (410: no longer buffered, or another history of the store) the browser
// gives up on that stream, and the page starts over from a fresh snapshot. Health comes
// from GET /healthz every two seconds. Everything is written with textContent, never as
// HTML: names and labels come from etcd, where anyone with write access can put anything.
"use strict";

(function () {
  const FEED_LENGTH = 50;
  const GONE_KEPT = 100;
  const HEALTH_EVERY_MS = 2000;
  const RETRY_MS = 1000;

  // name -> { name, state, addr, cpus, labels, draining, incarnation, since, sinceMs, gone }
  const members = new Map();
  // Newest first: the transitions' JSON as /v1/events sends it.
  const feed = [];
  let rules = [];
  let source = null;
  let renderPending = false;

  const $ = (id) => document.getElementById(id);

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    for (const child of children) {
      node.append(child);
    }
    return node;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  // The label filter, as the API's label= parameter reads it: KEY=VALUE or KEY (the key
  // present), separated by spaces or commas; a member must match every rule.
  function parseRules(text) {
    return text
      .split(/[\s,]+/)
      .filter(Boolean)
      .map((rule) => {
        const eq = rule.indexOf("=");
        return eq < 0
          ? { key: rule, value: null }
          : { key: rule.slice(0, eq), value: rule.slice(eq + 1) };
      });
  }

  function selected(labels) {
    return rules.every(
      (rule) =>
        Object.prototype.hasOwnProperty.call(labels, rule.key) &&
        (rule.value === null || labels[rule.key] === rule.value)
    );
  }

  // Renders at most every 50 ms: a burst of transitions (a crash of a whole group is one
  // revision) costs one render, not one per member.
  function schedule() {
    if (renderPending) return;
    renderPending = true;
    setTimeout(() => {
      renderPending = false;
      render();
    }, 50);
  }

  function row(member) {
    const state = element("td", { "data-label": "State" },
      element("span", { class: "state", "data-state": member.state }, member.state));
    if (member.draining && !member.gone) {
      state.append(" ", element("span", { class: "badge" }, "draining"));
    }
    const labels = element("td", { "data-label": "Labels", class: "labels" });
    const keys = Object.keys(member.labels).sort();
    for (const key of keys) {
      labels.append(element("span", { class: "label" }, `${key}=${member.labels[key]}`), " ");
    }
    if (keys.length === 0) labels.append("–");
    const since = element("td", { "data-label": "Since" }, `rev ${member.since}`);
    if (member.sinceMs) {
      since.append(" ", element("time", { datetime: new Date(member.sinceMs).toISOString() },
        clock(member.sinceMs)));
    }
    return element("tr", {
      "data-name": member.name,
      "data-state": member.state,
      "data-draining": member.draining ? "true" : "false",
      class: member.gone ? "gone" : null,
      hidden: selected(member.labels) ? null : "",
    },
      element("td", { "data-label": "Name", class: "name" }, member.name),
      state,
      element("td", { "data-label": "Address" }, member.addr || "–"),
      element("td", { "data-label": "CPUs", class: "number" }, String(member.cpus)),
      labels,
      element("td", { "data-label": "Incarnation" }, element("code", {}, member.incarnation)),
      since);
  }

  function render() {
    const names = [...members.keys()].sort();
    const counts = { alive: 0, suspect: 0, draining: 0, gone: 0 };
    let shown = 0;
    const rows = [];
    for (const name of names) {
      const member = members.get(name);
      rows.push(row(member));
      if (!selected(member.labels)) continue;
      shown += 1;
      if (member.gone) {
        counts.gone += 1;
      } else {
        counts[member.state] = (counts[member.state] || 0) + 1;
        if (member.draining) counts.draining += 1;
      }
    }
    $("rows").replaceChildren(...rows);
    for (const [state, count] of Object.entries(counts)) {
      $(`count-${state}`).textContent = String(count);
    }
    $("empty").hidden = members.size !== 0;
    $("shown").textContent = rules.length ? `${shown} of ${members.size} shown` : "";
    $("feed").replaceChildren(
      ...feed
        .filter((t) => selected(t.labels || {}))
        .map((t) =>
          element("li", { "data-kind": t.kind, "data-name": t.name },
            element("time", { datetime: new Date(t.at_unix_ms).toISOString() }, clock(t.at_unix_ms)),
            " ",
            element("b", {}, t.name),
            " ",
            element("span", { class: "kind", "data-state": t.state }, t.kind),
            ` rev ${t.revision}`))
    );
  }

  // Keeps only the GONE_KEPT most recent departed members on the page.
  function pruneGone() {
    const gone = [...members.values()].filter((m) => m.gone);
    gone.sort((a, b) => (b.sinceMs || 0) - (a.sinceMs || 0));
    for (const member of gone.slice(GONE_KEPT)) {
      members.delete(member.name);
    }
  }

  function apply(t) {
    const old = members.get(t.name);
    const present = t.state === "alive" || t.state === "suspect";
    // An update keeps the member's state; "since" is its last change of state.
    const changed = !old || old.gone || old.state !== t.state || t.kind === "restarted";
    members.set(t.name, {
      name: t.name,
      state: t.state,
      addr: t.addr,
      cpus: t.cpus,
      labels: t.labels || {},
      draining: Boolean(t.draining),
      incarnation: t.incarnation,
      since: changed ? t.revision : old.since,
      sinceMs: changed ? t.at_unix_ms : old.sinceMs,
      gone: !present,
    });
    feed.unshift(t);
    feed.length = Math.min(feed.length, FEED_LENGTH);
    if (!present) pruneGone();
    schedule();
  }

  function setStream(state, text) {
    const stream = $("stream");
    stream.dataset.state = state;
    stream.textContent = text || state;
  }

  const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // A fresh snapshot, then the stream from just after it. Members the page showed that the
  // snapshot no longer holds went while the page could not follow: "removed", as the
  // master itself reports a departure it did not see.
  async function load() {
    if (source) {
      source.close();
      source = null;
    }
    setStream("loading");
    let view;
    for (;;) {
      try {
        const response = await fetch("/v1/members", { cache: "no-store" });
        if (response.ok) {
          view = await response.json();
          break;
        }
        setStream("waiting", `waiting for the master (${response.status})`);
      } catch (error) {
        setStream("reconnecting", "reconnecting to the master");
      }
      await delay(RETRY_MS);
    }
    const listed = new Set();
    for (const m of view.members) {
      listed.add(m.name);
      const old = members.get(m.name);
      const same = old && !old.gone && old.since === m.since_revision;
      members.set(m.name, {
        name: m.name,
        state: m.state,
        addr: m.addr,
        cpus: m.cpus,
        labels: m.labels || {},
        draining: Boolean(m.draining),
        incarnation: m.incarnation,
        since: m.since_revision,
        sinceMs: same ? old.sinceMs : null,
        gone: false,
      });
    }
    for (const member of members.values()) {
      if (!listed.has(member.name) && !member.gone) {
        member.gone = true;
        member.state = "removed";
        member.sinceMs = Date.now();
      }
    }
    pruneGone();
    schedule();
    follow(view.epoch, view.revision + 1);
  }

  function follow(epoch, from) {
    const url = `/v1/events?from_revision=${from}&epoch=${encodeURIComponent(epoch)}`;
    const events = new EventSource(url);
    source = events;
    events.onopen = () => setStream("live");
    events.onmessage = (message) => apply(JSON.parse(message.data));
    events.onerror = () => {
      if (source !== events) return;
      if (events.readyState === EventSource.CLOSED) {
        // Refused (410, or any answer but a stream): this resume point is lost for good.
        source = null;
        setStream("reloading", "reloading the members");
        setTimeout(load, RETRY_MS);
      } else {
        setStream("reconnecting", "reconnecting to the master");
      }
    };
  }

  function showHealth(h) {
    const banner = $("health");
    const healthy = h.status === "ok";
    banner.dataset.healthy = healthy ? "true" : "false";
    banner.dataset.synced = String(Boolean(h.synced));
    banner.dataset.watching = String(Boolean(h.watching));
    if (healthy) {
      $("health-summary").textContent = "healthy";
      $("health-detail").textContent = `synced, watching etcd, at revision ${h.revision}`;
      return;
    }
    const parts = [];
    if (h.synced === false) parts.push("not synced");
    if (h.watching === false) parts.push("not watching etcd");
    if (h.unhealthy_for_ms !== undefined) {
      parts.push(`for ${Math.round(h.unhealthy_for_ms / 1000)} s`);
    }
    $("health-summary").textContent = parts.length
      ? `unhealthy: ${parts.join(", ")}`
      : "unhealthy";
    const detail = [];
    const why = h.last_error ? `Last error: ${h.last_error}` : h.reason;
    if (why) detail.push(/[.!?]$/.test(why) ? why : `${why}.`);
    detail.push("The table shows the last state this master saw, which may be out of date.");
    $("health-detail").textContent = detail.join(" ");
  }

  async function health() {
    let h;
    try {
      const response = await fetch("/healthz", { cache: "no-store" });
      h = await response.json();
    } catch (error) {
      h = {
        status: "unreachable",
        reason: `cannot reach this master (${error.message}): it may have stopped or be restarting`,
      };
    }
    showHealth(h);
    setTimeout(health, HEALTH_EVERY_MS);
  }

  function setFilter(text) {
    rules = parseRules(text);
    const hash = text.trim() ? `#labels=${encodeURIComponent(text.trim())}` : "";
    history.replaceState(null, "", `${location.pathname}${location.search}${hash}`);
    render();
  }

  function start() {
    const filter = $("filter");
    const match = /^#labels=(.*)$/.exec(location.hash);
    if (match) {
      filter.value = decodeURIComponent(match[1]);
      rules = parseRules(filter.value);
    }
    filter.addEventListener("input", () => setFilter(filter.value));
    health();
    load();
  }

  start();
})();
