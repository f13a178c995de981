// Drives Airflow's real UI in Debian's Chromium (playwright-core, headless) for test_ui_browser.py.
//
//   node ui_suite.js <phase> <config.json> <report.json>
//
// phase "connection": sign in through the login page, create a Twilio SMS connection with the form,
//   save, reopen it, press Test after each fix (bad SID, wrong token, right token).
// phase "messages": open the "Twilio SMS" page inside Airflow's UI as each user, light and dark.
//
// The script only acts and records what the page shows (report.json); the pytest side asserts.
// Screenshots go to config.outDir. Exits non-zero when an interaction itself fails.
"use strict";

const fs = require("fs");
const path = require("path");

const [phase, configPath, reportPath] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
const { chromium } = require(config.playwrightCore);
const report = { phase, steps: [] };
const TIMEOUT = 30000;

function save() {
  fs.writeFileSync(reportPath, JSON.stringify(report, null, 2));
}

async function shot(page, name, locator) {
  const file = path.join(config.outDir, `${name}.png`);
  await (locator || page).screenshot({ path: file, ...(locator ? {} : { fullPage: true }) });
  report.steps.push({ screenshot: file });
}

async function signIn(browser, username, colorMode) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, colorScheme: colorMode || "light" });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  await page.goto(`${config.baseUrl}/`);
  await page.waitForURL((url) => url.pathname.includes("/auth/login"));
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", config.passwords[username]);
  await page.click("button[type=submit]");
  await page.waitForURL((url) => !url.pathname.includes("/auth/"));
  return { context, page };
}

// --- phase: connection ------------------------------------------------------------------------------

async function openDialog(page, action) {
  await page.goto(`${config.baseUrl}/connections`);
  if (action === "add") {
    await page.getByRole("button", { name: "Add Connection" }).click();
  } else {
    const row = page.getByRole("row").filter({ hasText: config.connId });
    await row.getByRole("button", { name: "Edit Connection" }).click();
  }
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  return dialog;
}

async function openSection(dialog, name) {
  const trigger = dialog.getByRole("button", { name, exact: true });
  if ((await trigger.getAttribute("aria-expanded")) !== "true") await trigger.click();
}

async function formState(dialog) {
  // Every field the form shows: its label, input name, type, placeholder and current value.
  return dialog.evaluate((root) => [...root.querySelectorAll("[data-scope=field][data-part=root]")].map((field) => {
    const label = field.querySelector("label");
    const input = field.querySelector("input, textarea");
    const help = field.querySelector("[data-part=helper-text]");
    if (!input) return null;
    const type = input.getAttribute("type") || input.tagName.toLowerCase();
    // A typed secret is never copied into the report (it could end up in a failing test's output).
    const value = type === "password" && input.value && input.value !== "***" ? "<typed secret>" : input.value;
    return {
      label: label ? label.textContent.replace("*", "").trim() : null, name: input.getAttribute("name") || input.id,
      type, placeholder: input.getAttribute("placeholder"), value, help: help ? help.textContent.trim() : null,
    };
  }).filter(Boolean));
}

async function pressTest(page, label) {
  const row = page.getByRole("row").filter({ hasText: config.connId });
  const toasts = page.locator("[data-scope=toast][data-part=root]");
  await page.locator("[data-scope=toast][data-part=close-trigger]").evaluateAll((els) => els.forEach((e) => e.click()));
  await toasts.first().waitFor({ state: "detached", timeout: 5000 }).catch(() => {});
  const answer = page.waitForResponse((r) => r.url().endsWith("/api/v2/connections/test"));
  await row.getByRole("button", { name: "Test Connection" }).click();
  const response = await answer;
  const toast = toasts.filter({ hasText: /Test Connection (Successful|Failed)/ }).last();
  await toast.waitFor();
  const result = { label, http_status: response.status(), toast: (await toast.innerText()).trim(),
                   toast_type: await toast.getAttribute("data-type") };
  await shot(page, `connection-test-${label}`);
  if (response.status() === 400 && config.airflowPortBug) {
    // Airflow 3.3.2's list-row Test sends `port: Number(null)` = 0 for a connection without a port and its
    // API answers 400 before any hook runs (fixed upstream by apache/airflow#73298). Send what the fixed
    // UI sends (the same body without the port) from the signed-in page to the same endpoint.
    const sent = JSON.parse(response.request().postData());
    delete sent.port;
    result.without_port = await page.evaluate(async (body) => {
      const r = await fetch("/api/v2/connections/test", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      return { http_status: r.status, ...(await r.json()) };
    }, sent);
  }
  await page.locator("[data-scope=toast][data-part=close-trigger]").evaluateAll((els) => els.forEach((e) => e.click()));
  report.tests = report.tests || [];
  report.tests.push(result);
  save();
}

async function editAndSave(page, fill) {
  const dialog = await openDialog(page, "edit");
  await openSection(dialog, "Standard Fields");
  await fill(dialog);
  await dialog.getByRole("button", { name: "Save" }).click();
  await dialog.waitFor({ state: "hidden" });
}

async function connectionPhase(browser) {
  const { page } = await signIn(browser, "admin");
  const c = config.connection;
  const dialog = await openDialog(page, "add");
  await dialog.locator("input[name=connection_id]").fill(config.connId);
  const type = dialog.getByRole("combobox").first();
  await type.click();
  await type.fill("Twilio");
  await page.getByRole("option", { name: "Twilio SMS" }).click();
  // One accordion section is open at a time: the standard fields first, then the extras.
  await openSection(dialog, "Standard Fields");
  await dialog.locator("input[name=login]").fill(c.bad_sid);
  await dialog.locator("input[name=password]").fill(c.wrong_token);
  await shot(page, "connection-form-standard", dialog);
  await openSection(dialog, "Extra Fields");
  for (const [name, value] of Object.entries(c.extra)) {
    await dialog.locator(`input[name=element_${name}]`).fill(value);
  }
  if (c.team) {
    const team = dialog.getByRole("combobox").last();
    await team.click();
    await page.getByRole("option", { name: c.team }).click();
  }
  report.form = await formState(dialog);
  await page.setViewportSize({ width: 1440, height: 2400 });
  await shot(page, "connection-form-filled", dialog);
  await page.setViewportSize({ width: 1440, height: 1000 });
  await dialog.getByRole("button", { name: "Save" }).click();
  await dialog.waitFor({ state: "hidden" });
  save();

  await pressTest(page, "bad-sid");
  await editAndSave(page, (d) => d.locator("input[name=login]").fill(c.account_sid));
  await pressTest(page, "wrong-token");
  await editAndSave(page, async (d) => {
    const password = d.locator("input[name=password]");
    await password.fill("");
    await password.fill(c.auth_token);
  });

  const reopened = await openDialog(page, "edit");
  await openSection(reopened, "Standard Fields");
  await openSection(reopened, "Extra Fields");
  report.reopened = await formState(reopened);
  await page.setViewportSize({ width: 1440, height: 2600 });
  await shot(page, "connection-form-reopened", reopened);
  await page.setViewportSize({ width: 1440, height: 1000 });
  await page.keyboard.press("Escape");
  await reopened.waitFor({ state: "hidden" });
  await pressTest(page, "good");
  save();
}

// --- phase: messages --------------------------------------------------------------------------------

async function readMessagesPage(page) {
  const frame = page.frameLocator("iframe[title='Twilio SMS']");
  await frame.locator("body[data-loaded=true]").waitFor();
  return frame.locator("body").evaluate((body) => {
    const rows = (id) => [...body.querySelectorAll(`#${id} tbody tr`)];
    const cells = (tr) => [...tr.children].map((td) => td.textContent.trim());
    return {
      dark: document.documentElement.classList.contains("dark"),
      background: getComputedStyle(body).backgroundColor,
      notice: body.querySelector("#notice").hidden ? null : body.querySelector("#notice").textContent,
      summary: Object.fromEntries([...body.querySelectorAll("#summary .card")].map((c) =>
        [c.dataset.key, c.querySelector(".value").textContent])),
      failures: rows("failures").map(cells),
      messages: rows("messages").map((tr) => ({
        sid: tr.dataset.sid, cells: cells(tr),
        status: tr.children[5].querySelector(".badge").dataset.status,
        timeline: [...tr.querySelectorAll(".timeline .badge")].map((b) => b.dataset.status),
        body_visible: getComputedStyle(tr.children[7]).display !== "none", body: tr.children[7].textContent,
        body_withheld: tr.children[7].classList.contains("withheld") ? tr.children[7].title : null,
      })),
      inbound: rows("inbound").map((tr) => ({ sid: tr.dataset.sid, cells: cells(tr),
        body_visible: getComputedStyle(tr.children[5]).display !== "none", body: tr.children[5].textContent,
        body_withheld: tr.children[5].classList.contains("withheld") ? tr.children[5].title : null })),
      opt_outs: rows("opt-outs").map(cells),
      text: body.innerText,
    };
  });
}

async function openMessagesPage(page) {
  const nav = page.getByRole("button", { name: "Browse" });
  await nav.click();
  await page.getByRole("menuitem", { name: "Twilio SMS" }).click();
  await page.waitForURL((url) => url.pathname.endsWith(`/plugin/${config.uiRoute}`));
}

async function messagesPhase(browser) {
  report.views = {};
  for (const user of config.viewers) {
    const { context, page } = await signIn(browser, user);
    if (user === "admin") {
      await openMessagesPage(page); // through Airflow's own navigation, as a user finds it
    } else {
      await page.goto(`${config.baseUrl}/plugin/${config.uiRoute}`);
    }
    const view = await readMessagesPage(page);
    await shot(page, `messages-${user}-light`);
    if (user === "admin") {
      const frame = page.frameLocator("iframe[title='Twilio SMS']");
      await frame.locator("#show-bodies").check();
      // The columns show at once; their text comes with the next read (include_body=true): wait for it.
      for (const table of ["#messages", "#inbound"]) {
        await frame.locator(`${table} td.body-col`).filter({ hasText: /\S/ }).first().waitFor({ state: "visible" });
      }
      view.with_bodies = await readMessagesPage(page);
      await shot(page, "messages-admin-bodies");
      // Dark mode the way Airflow keeps it (localStorage "theme", same origin), then reload.
      await page.evaluate(() => localStorage.setItem("theme", "dark"));
      await page.reload();
      view.dark_mode = await readMessagesPage(page);
      await shot(page, "messages-admin-dark");
      const started = Date.now();
      view.api_timings = await page.frameLocator("iframe[title='Twilio SMS']").locator("body").evaluate(async () => {
        const timings = {};
        for (const path of ["summary?period=7d", "messages?direction=outbound&include_history=true&limit=50",
                            "messages?direction=inbound&limit=50", "opt-outs?limit=50"]) {
          const t0 = performance.now();
          const r = await fetch(`../api/${path}`, { credentials: "same-origin" });
          await r.json();
          timings[path] = { status: r.status, ms: Math.round(performance.now() - t0) };
        }
        return timings;
      });
      view.api_timings_total_ms = Date.now() - started;
    } else {
      // A viewer may not read the connections: asking for bodies shows each one withheld, no text.
      const frame = page.frameLocator("iframe[title='Twilio SMS']");
      await frame.locator("#show-bodies").check();
      await frame.locator("#messages td.body-col.withheld").first().waitFor({ state: "visible" });
      view.with_bodies = await readMessagesPage(page);
      await shot(page, `messages-${user}-bodies`);
    }
    report.views[user] = view;
    save();
    await context.close();
  }
  // Without a session the page must not show data: it says to sign in.
  const anonymous = await browser.newContext();
  const page = await anonymous.newPage();
  await page.goto(`${config.baseUrl}/twilio_sms/ui/`);
  await page.locator("#notice:not([hidden])").waitFor();
  report.anonymous = { notice: await page.locator("#notice").innerText(),
                       rows: await page.locator("#messages tbody tr").count() };
  await anonymous.close();
}

(async () => {
  fs.mkdirSync(config.outDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: config.chromium, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run"],
  });
  try {
    if (phase === "connection") await connectionPhase(browser);
    else if (phase === "messages") await messagesPhase(browser);
    else throw new Error(`unknown phase ${phase}`);
    report.ok = true;
  } finally {
    save();
    await browser.close();
  }
})().catch((err) => {
  report.ok = false;
  report.error = String(err && err.stack || err);
  save();
  console.error(report.error);
  process.exit(1);
});
