/* stask admin UI: preferences, actions over the JSON API, live regions, the task's live log,
   forms, charts and keyboard shortcuts. No build step; no HTML is built from data (text only). */
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const meta = (name) => { const el = $(`meta[name="${name}"]`); return el ? el.content : ""; };
  const prefix = meta("stask-prefix");
  const textEl = $("#stask-text");
  const TEXT = textEl ? JSON.parse(textEl.textContent) : {};
  const YEAR = 365 * 24 * 3600;

  function setCookie(name, value) {
    const secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = `${name}=${encodeURIComponent(value)}; Path=/; Max-Age=${YEAR}; SameSite=Lax${secure}`;
  }

  // -- messages ---------------------------------------------------------------------------------
  let toastTimer = null;
  function toast(message, bad) {
    const el = $(".toast");
    if (!el) return;
    el.textContent = message;
    el.classList.toggle("bad", !!bad);
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, bad ? 8000 : 4000);
  }

  async function api(method, url, body) {
    const headers = { "X-CSRF-TOKEN": meta("csrf-token"), "Accept": "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body instanceof FormData) {
      init.body = body; // multipart: the browser writes the Content-Type with its boundary
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let data = {};
    let status = 0;
    try {
      const answer = await fetch(url, init);
      status = answer.status;
      data = await answer.json().catch(() => ({}));
    } catch (err) {
      data = { message: String(err) };
    }
    return { ok: status >= 200 && status < 300 && data.success !== false, status, data };
  }

  const fill = (template, values) => template.replace(/\{(\w+)\}/g, (m, k) => String(values[k] ?? ""));
  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
  const shown = () => new Promise((resolve) => {
    if (!document.hidden) { resolve(); return; }
    const wake = () => { if (!document.hidden) { document.removeEventListener("visibilitychange", wake); resolve(); } };
    document.addEventListener("visibilitychange", wake);
  });

  // -- background jobs (bulk actions, Process pending): followed in `out` until they end ---------
  // One request at a time, none while the tab is hidden, slower as the job goes on.
  async function followJob(job, out) {
    const say = (text, bad) => { out.textContent = text; out.classList.toggle("bad", !!bad); out.hidden = false; };
    let delay = 500;
    for (;;) {
      await shown();
      const answer = await api("GET", `${prefix}/api/bulk/${encodeURIComponent(job)}`);
      if (!answer.ok || !answer.data.job) { say(TEXT.job_lost, true); return null; }
      const state = answer.data.job;
      const template = TEXT[`job_${state.status}`] || TEXT.job_running;
      say(fill(template, state), state.status === "failed");
      if (state.status !== "running") return state;
      await sleep(delay);
      delay = Math.min(delay * 1.5, 5000);
    }
  }

  // -- preferences: language, theme, time zone (cookies, read by the server) ---------------------
  function initPreferences() {
    const zone = (Intl.DateTimeFormat().resolvedOptions().timeZone || "");
    $$("select[data-browser-zone]").forEach((select) => {
      if (zone && zone !== "UTC" && !$$("option", select).some((o) => o.value === zone)) {
        const option = document.createElement("option");
        option.value = zone;
        option.textContent = `${TEXT.browser_zone || "Browser"} (${zone})`;
        select.appendChild(option);
      }
    });
    $$("select[data-pref]").forEach((select) => select.addEventListener("change", () => {
      setCookie(select.dataset.pref, select.value);
      if (select.dataset.pref === "stask_theme") document.documentElement.dataset.theme = select.value;
      else location.reload();
    }));
    $$("[data-set-pref]").forEach((button) => button.addEventListener("click", () => {
      setCookie(button.dataset.setPref, button.value);
      location.reload();
    }));
  }

  // -- buttons that call the API ------------------------------------------------------------------
  async function after(kind, data) {
    if (kind === "reload") location.reload();
    else if (kind === "refresh") live.now();
    else if (kind === "goto-task" && data.id) location.href = `${prefix}/tasks/${data.id}`;
    else if (kind === "goto-list") location.href = `${prefix}/tasks`;
  }

  function initButtons() {
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-post]");
      if (!button) return;
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      button.disabled = true;
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      const answer = await api(button.dataset.method || "POST", button.dataset.post, body);
      button.disabled = false;
      toast(answer.data.message || (answer.ok ? TEXT.done : TEXT.failed), !answer.ok);
      if (answer.ok) after(button.dataset.after, answer.data);
    });
    $$("[data-logout]").forEach((button) => button.addEventListener("click", async () => {
      await api("POST", `${prefix}/api/logout`);
      location.href = `${prefix}/login`;
    }));
  }

  // -- live regions: the page fetched again, its [data-live] parts swapped ----------------------
  // One request in flight at most; nothing while the tab is hidden; slower when answers are slow.
  // A refresh asked for while one is on its way follows it: that one may predate an action's change.
  const live = {
    regions: [], seconds: 5, factor: 1, timer: null, busy: false, again: false,
    init() {
      this.regions = $$("[data-live]");
      const select = $("[data-live-interval]");
      if (!this.regions.length) return;
      if (select) {
        const kept = localStorage.getItem("stask_live_seconds");
        if (kept !== null && $$("option", select).some((o) => o.value === kept)) select.value = kept;
        this.seconds = Number(select.value);
        select.addEventListener("change", () => {
          this.seconds = Number(select.value);
          localStorage.setItem("stask_live_seconds", select.value);
          this.factor = 1;
          this.schedule();
        });
      } else {
        this.seconds = 0; // the page drives its own updates (the task page)
      }
      document.addEventListener("visibilitychange", () => { if (!document.hidden) this.schedule(); });
      this.schedule();
    },
    schedule() {
      clearTimeout(this.timer);
      this.state();
      if (!this.seconds || document.hidden) return;
      this.timer = setTimeout(() => this.now(), this.seconds * 1000 * this.factor);
    },
    state() {
      const el = $("[data-live-state]");
      if (!el) return;
      el.textContent = !this.seconds ? TEXT.paused : (this.factor > 1 ? TEXT.slow : TEXT.live);
    },
    async now() {
      if (this.busy) { this.again = true; return; }
      if (document.hidden || !this.regions.length) { if (!this.regions.length) location.reload(); return; }
      this.busy = true;
      this.again = false;
      const started = performance.now();
      try {
        const answer = await fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
        if (answer.redirected || !answer.ok) throw new Error(String(answer.status));
        const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
        this.regions = this.regions.map((old) => {
          const next = fresh.querySelector(`[data-live="${old.dataset.live}"]`);
          if (!next) return old;
          const kept = new Set($$("input[name=ids]:checked", old).map((i) => i.value));
          const adopted = document.adoptNode(next);
          old.replaceWith(adopted);
          $$("input[name=ids]", adopted).forEach((i) => { i.checked = kept.has(i.value); });
          return adopted;
        });
        const took = performance.now() - started;
        this.factor = took > 1000 ? Math.min(this.factor * 2, 8) : Math.max(1, this.factor / 2);
        document.dispatchEvent(new CustomEvent("stask:refreshed"));
      } catch (err) {
        this.factor = Math.min(this.factor * 2, 8);
      } finally {
        this.busy = false;
        if (this.again) this.now(); else this.schedule();
      }
    },
  };

  // -- one task: progress by Server-Sent Events (else polling that slows to 25 s), the log -------
  function initTaskLog() {
    const log = $("ol[data-log]");
    if (!log) return;
    const base = log.dataset.log;
    const state = $("[data-log-state]");
    let cursor = log.dataset.cursor ? Number(log.dataset.cursor) : null;
    let finished = log.dataset.finished === "true";
    let source = null;
    let failures = 0;
    let pollDelay = 1000;
    let pollTimer = null;
    let pending = false;

    function append(line) {
      if (cursor !== null && line.id <= cursor) return;
      cursor = line.id;
      const li = document.createElement("li");
      li.className = `lvl-${String(line.level).replace(/[^a-z]/g, "")}`;
      const when = document.createElement("time");
      when.dateTime = line.ts;
      when.textContent = line.ts;
      const level = document.createElement("span");
      level.className = "level";
      level.textContent = line.level;
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = line.message;
      li.append(when, " ", level, " ", text);
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
      log.appendChild(li);
      if (atBottom) log.scrollTop = log.scrollHeight;
    }
    function changed() { // the state region comes from the server, so the Markdown is rendered there
      if (pending) return;
      pending = true;
      setTimeout(() => { pending = false; live.now(); }, 1000);
    }
    function query() { return cursor === null ? "" : `?after=${cursor}`; }
    function stream() {
      if (finished || document.hidden || !window.EventSource) { if (!window.EventSource) poll(); return; }
      source = new EventSource(`${base}/events${query()}`);
      if (state) state.textContent = TEXT.live;
      source.addEventListener("log", (e) => append(JSON.parse(e.data)));
      source.addEventListener("progress", () => { failures = 0; changed(); });
      source.addEventListener("end", () => { finished = true; source.close(); changed(); if (state) state.textContent = ""; });
      source.onerror = () => {
        source.close();
        failures += 1;
        if (failures >= 3) poll();
        else setTimeout(stream, 2000);
      };
    }
    async function poll() {
      clearTimeout(pollTimer);
      if (document.hidden) return;
      const answer = await api("GET", `${base}/logs${query()}`);
      const lines = answer.ok ? answer.data.logs || [] : [];
      lines.forEach(append);
      if (lines.length) pollDelay = 1000; else pollDelay = Math.min(pollDelay * 1.5, 25000);
      if (lines.length || !finished) changed();
      if (state) state.textContent = TEXT.live;
      if (!finished || lines.length) pollTimer = setTimeout(poll, pollDelay);
    }
    document.addEventListener("stask:refreshed", () => {
      const region = $('[data-live="task-state"]');
      if (!region) return;
      const now = region.dataset.finished === "true";
      if (finished && !now) { // retried: queued again, so follow it again
        finished = false;
        failures = 0;
        pollDelay = 1000;
        if (source) source.close();
        stream();
      }
      finished = now;
    });
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) { if (source) source.close(); clearTimeout(pollTimer); }
      else if (failures >= 3) poll();
      else stream();
    });
    stream();
  }

  // -- forms --------------------------------------------------------------------------------------
  // "2026-12-24T18:30" on the clocks of time zone `zone`, as an ISO instant in UTC.
  function zonedToUtc(local, zone) {
    const [y, mo, d, h, mi] = local.split(/[-T:]/).map(Number);
    const wall = Date.UTC(y, mo - 1, d, h, mi);
    const format = new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    const offsetAt = (instant) => {
      const p = Object.fromEntries(format.formatToParts(new Date(instant)).map((part) => [part.type, Number(part.value)]));
      return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - instant;
    };
    const first = wall - offsetAt(wall);
    return new Date(wall - offsetAt(first)).toISOString();
  }
  function fieldError(el, message) {
    const holder = el.closest(".field") || el.closest("form");
    const out = holder ? $(".field-error", holder) : null;
    el.setAttribute("aria-invalid", message ? "true" : "false");
    if (out) { out.textContent = message || ""; out.hidden = !message; }
  }
  function formError(form, message) {
    const out = $("[data-form-error]", form) || $(":scope > .field-error", form);
    if (out) { out.textContent = message || ""; out.hidden = !message; }
  }

  function initForms() {
    $$("form[data-run]").forEach((form) => form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const area = form.elements.options;
      let options;
      try { options = JSON.parse(area.value || "{}"); } catch (err) { fieldError(area, TEXT.invalid_json); return; }
      if (options === null || typeof options !== "object" || Array.isArray(options)) { fieldError(area, TEXT.invalid_json); return; }
      fieldError(area, "");
      const file = form.elements.file && form.elements.file.files[0];
      let answer;
      if (file && form.dataset.upload) { // the file is the task's input: stored, then the task starts
        const parts = new FormData();
        parts.append("file", file);
        parts.append("options", JSON.stringify(options));
        answer = await api("POST", `${form.dataset.upload}${encodeURIComponent(form.elements.action.value)}/upload`, parts);
      } else {
        answer = await api("POST", form.dataset.run, {
          identifier: form.dataset.identifier, action: form.elements.action.value,
          priority: form.elements.priority.value, options,
        });
      }
      if (answer.ok) location.href = `${prefix}/tasks/${answer.data.id}`;
      else fieldError(area, answer.data.message || TEXT.failed);
    }));

    $$("form[data-settings]").forEach((form) => form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const values = {};
      let valid = true;
      $$("[data-kind]", form).forEach((el) => {
        const kind = el.dataset.kind;
        fieldError(el, "");
        if (el.hasAttribute("data-redacted") && el.value === el.defaultValue) return;
        if (kind === "bool") values[el.name] = el.checked;
        else if (kind === "number") {
          const n = Number(el.value);
          if (el.value.trim() === "" || Number.isNaN(n)) { fieldError(el, TEXT.invalid_number); valid = false; } else values[el.name] = n;
        } else if (kind === "json") {
          try { values[el.name] = JSON.parse(el.value); } catch (err) { fieldError(el, TEXT.invalid_json); valid = false; }
        } else values[el.name] = el.value;
      });
      if (!valid) return;
      const answer = await api("PUT", form.dataset.settings, { values });
      formError(form, answer.ok ? "" : answer.data.message);
      if (answer.ok) toast(TEXT.done);
    }));

    $$("form[data-schedule]").forEach((form) => {
      const type = form.elements.type;
      const show = () => $$("fieldset[data-for]", form).forEach((set) => { set.hidden = set.dataset.for !== type.value; });
      type.addEventListener("change", show);
      show();
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const f = form.elements;
        const body = { type: type.value, timezone: f.timezone.value.trim() || "UTC" };
        if (f.action) body.action = f.action.value;
        if (type.value === "once") body.at = f.at.value;
        if (type.value === "periodic") {
          body.frequency = f.frequency.value;
          if (body.frequency === "hourly") body.minute = Number(f.minute.value);
          else body.time = f.time.value;
          if (body.frequency === "weekly") body.days = f.days.value;
        }
        if (type.value === "regular") {
          body.start_time = f.start_time.value; body.end_time = f.end_time.value; body.interval = Number(f.interval.value);
        }
        if (type.value === "cron") body.expression = f.expression.value;
        const answer = await api("PUT", form.dataset.schedule, body);
        formError(form, answer.ok ? "" : answer.data.message);
        if (answer.ok) location.reload();
      });
    });

    $$("form[data-process]").forEach((form) => form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!window.confirm(form.dataset.confirm)) return;
      const button = $("button", form);
      const out = $("[data-job-state]");
      button.disabled = true;
      const answer = await api("POST", form.dataset.process, { batch_size: Number(form.elements.batch_size.value) });
      if (answer.ok && answer.data.job && out) await followJob(answer.data.job, out);
      else toast(answer.status === 409 ? TEXT.job_busy : (answer.data.message || TEXT.failed), !answer.ok);
      button.disabled = false;
      live.now();
    }));

    // A queue's limits, and a pause until a time the reader gives in their chosen zone.
    $$("form[data-limits], form[data-pause-until]").forEach((form) => {
      const choice = $("[data-queue-choice]", form);
      const picked = () => choice.selectedOptions[0];
      const limits = form.hasAttribute("data-limits");
      const showLimits = () => {
        if (!limits) return;
        const kept = picked().dataset;
        form.elements.concurrency.value = kept.concurrency;
        form.elements.rate_limit.value = kept.rate;
        form.elements.rate_period.value = kept.period;
      };
      choice.addEventListener("change", showLimits);
      showLimits();
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const f = form.elements;
        const number = (el) => (el.value.trim() === "" ? null : Number(el.value));
        if (limits && (number(f.rate_limit) === null) !== (number(f.rate_period) === null)) {
          formError(form, form.dataset.pairError);
          return;
        }
        const answer = limits
          ? await api("PUT", picked().dataset.url, { concurrency: number(f.concurrency), rate_limit: number(f.rate_limit), rate_period: number(f.rate_period) })
          : await api("POST", picked().dataset.url, { until: zonedToUtc(f.until.value, form.dataset.zone) });
        formError(form, answer.ok ? "" : (answer.data.message || TEXT.failed));
        if (!answer.ok) return;
        const queue = answer.data.queue || {};
        if (limits) {
          Object.assign(picked().dataset, {
            concurrency: queue.concurrency_limit ?? "", rate: queue.rate_limit ?? "", period: queue.rate_period_seconds ?? "",
          });
        }
        toast(TEXT.done);
        live.now();
      });
    });

    // Passwords: an admin sets another user's; anyone changes their own (all their sessions end).
    $$("form[data-password]").forEach((form) => form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const answer = await api("POST", form.dataset.password, { password: form.elements.password.value });
      formError(form, answer.ok ? "" : (answer.data.message || TEXT.failed));
      if (!answer.ok) return;
      form.reset();
      form.closest("details").open = false;
      toast(TEXT.done);
    }));
    $$("[data-open]").forEach((button) => button.addEventListener("click", () => {
      const dialog = document.getElementById(button.dataset.open);
      if (dialog) dialog.showModal();
    }));
    $$("dialog [data-close]").forEach((button) => button.addEventListener("click", () => button.closest("dialog").close()));
    $$("form[data-own-password]").forEach((form) => form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      if (f.password.value !== f.repeat.value) { fieldError(f.repeat, form.dataset.mismatch); return; }
      fieldError(f.repeat, "");
      const answer = await api("POST", form.dataset.ownPassword, { current_password: f.current_password.value, password: f.password.value });
      if (answer.ok) { location.href = `${prefix}/login`; return; }
      formError(form, answer.status === 403 ? form.dataset.wrong : (answer.data.message || TEXT.failed));
    }));

    $$("form[data-create]").forEach((form) => form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {};
      $$("input[name], select[name]", form).forEach((el) => {
        if (el.dataset.kind === "list") body[el.name] = el.value.split(",").map((s) => s.trim()).filter(Boolean);
        else body[el.name] = el.value;
      });
      const answer = await api("POST", form.dataset.create, body);
      formError(form, answer.ok ? "" : answer.data.message);
      if (!answer.ok) return;
      const secret = answer.data[form.dataset.show];
      const out = $("[data-secret]", form);
      if (secret && out) { $("code", out).textContent = secret; out.hidden = false; toast(TEXT.done); } else location.reload();
    }));
  }

  // -- bulk actions on the task list -------------------------------------------------------------
  // The bar lives in the list's live region, which a refresh replaces: its clicks are delegated.
  function initBulk() {
    if (!$("[data-bulk]")) return;
    let following = false; // a job of everything matching, followed in [data-job-state]
    document.addEventListener("change", (event) => {
      if (event.target.matches("[data-select-all]")) $$("input[name=ids]").forEach((i) => { i.checked = event.target.checked; });
    });
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-bulk-action]");
      const bar = button && button.closest("[data-bulk]");
      if (!bar) return;
      const text = JSON.parse(bar.dataset.text);
      const filters = JSON.parse(bar.dataset.filters);
      const action = button.dataset.bulkAction;
      const url = `${bar.dataset.bulk}/${action}`;
      let answer;
      if (button.hasAttribute("data-bulk-all")) {
        if (following) { toast(TEXT.job_busy, true); return; }
        const body = {};
        ["status", "worker", "queue", "q", "from", "to"].forEach((k) => { if (filters[k]) body[k] = filters[k]; });
        answer = await api("POST", url, body);
        if (answer.ok && answer.data.confirm_required) {
          if (answer.data.capped) { toast(text.capped, true); return; }
          if (!window.confirm(fill(text.all_confirm, { action: button.textContent, count: answer.data.count }))) return;
          answer = await api("POST", url, { ...body, confirm: answer.data.count });
        }
        const out = $("[data-job-state]");
        if (answer.ok && answer.data.job && out) {
          following = true;
          try { await followJob(answer.data.job, out); } finally { following = false; }
          live.now();
          return;
        }
      } else {
        const ids = $$("input[name=ids]:checked").map((i) => Number(i.value));
        if (!ids.length) { toast(text.none, true); return; }
        if (!window.confirm(fill(text.selected_confirm, { action: button.textContent, count: ids.length }))) return;
        answer = await api("POST", url, { ids });
      }
      toast(answer.data.message || (answer.ok ? TEXT.done : TEXT.failed), !answer.ok);
      if (answer.ok) live.now();
    });
  }

  // -- charts (uPlot when it loaded; the table beside each chart otherwise) ----------------------
  function initCharts() {
    if (!window.uPlot) return;
    $$("[data-chart]").forEach((box) => {
      const source = box.parentElement.querySelector("script[data-chart-data]");
      if (!source) return;
      const rows = JSON.parse(source.textContent);
      const labels = JSON.parse(box.dataset.labels);
      const css = getComputedStyle(document.documentElement);
      const color = (name) => css.getPropertyValue(name).trim();
      const data = [
        rows.map((r) => Date.parse(r.hour) / 1000),
        rows.map((r) => r.completed), rows.map((r) => r.failed), rows.map((r) => r.cancelled),
      ];
      const width = Math.max(240, box.clientWidth);
      // eslint-disable-next-line no-new
      new window.uPlot({
        width, height: 220,
        series: [{}, { label: labels.completed, stroke: color("--ok") },
          { label: labels.failed, stroke: color("--bad") }, { label: labels.cancelled, stroke: color("--grey") }],
        axes: [{ stroke: color("--muted") }, { stroke: color("--muted") }],
      }, data, box);
    });
  }

  // -- keyboard shortcuts --------------------------------------------------------------------------
  function initKeys() {
    const help = $("#help");
    $$("[data-help]").forEach((b) => b.addEventListener("click", () => help && help.showModal()));
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const t = event.target;
      if (t.closest && t.closest("input, textarea, select, [contenteditable]")) return;
      if (!prefix && prefix !== "") return;
      const go = { d: "/", w: "/workers", s: "/stats", t: "/tasks" }[event.key.toLowerCase()];
      if (event.key === "?" && help) { event.preventDefault(); help.open ? help.close() : help.showModal(); }
      else if (event.key.toLowerCase() === "r") { event.preventDefault(); live.regions.length ? live.now() : location.reload(); }
      else if (go && $("header.top")) { event.preventDefault(); location.href = prefix + go; }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    initPreferences();
    initButtons();
    initForms();
    initBulk();
    live.init();
    initTaskLog();
    initCharts();
    initKeys();
  });
})();
