/*
 * The offline GraphiQL page in a real browser (Debian's chromium driven by playwright-core): the
 * page loads with no request leaving the machine, runs queries over HTTP with the Headers tab, and
 * runs subscriptions over graphql-ws with the same headers (copied into connection_init by the
 * page's WebSocket shim, see src/graphql/graphiql-page.ts).
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gql, startTestStack, type TestStack } from "../helpers/test-stack.js";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
// Locally a machine without a browser skips these tests; CI installs chromium (.ci/run), so there they must run.
const skip = !haveChromium && !process.env.CI;
const title = skip
  ? `GraphiQL in a real browser: SKIPPED because ${CHROMIUM} is absent (apt-get install chromium; CI installs it)`
  : "GraphiQL in a real browser";
if (skip) console.warn(title);

const SCREENSHOT = "/tmp/graphiql.png";

/** Monaco editors carry their model's URI; GraphiQL names them by role (see EE in the bundle). */
const QUERY = "operation.graphql";
const HEADERS = "request-headers.json";
const RESPONSE = "response.json";

let stack: TestStack;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const blocked: string[] = [];
const pageErrors: string[] = [];
const sockets: string[] = [];
const framesSent: string[] = [];

function isLocal(url: URL): boolean {
  return url.hostname === "127.0.0.1" || url.hostname === "localhost" || url.hostname === "[::1]";
}

function editor(suffix: string) {
  return page.locator(`.monaco-editor[data-uri$="${suffix}"]`);
}

/** The text an editor shows; Monaco renders spaces as U+00A0. */
async function editorText(suffix: string): Promise<string> {
  const text = await editor(suffix).locator(".view-lines").innerText();
  return text.replace(/\u00a0/g, " ");
}

/**
 * What GraphiQL has persisted: the query editor (its 100 ms debounced change handler also sets the
 * operation name that "run" uses) and the Headers tab (500 ms debounced; both places the WebSocket
 * shim reads).
 */
const PERSISTED = `(() => {
  const tabs = JSON.parse(localStorage.getItem("graphiql:tabState") || "null");
  const tab = tabs && tabs.tabs && tabs.tabs[tabs.activeTabIndex];
  return { query: localStorage.getItem("graphiql:query"), headers: localStorage.getItem("graphiql:headers"), tabHeaders: tab ? tab.headers : null };
})()`;

async function persisted(): Promise<{ query: string | null; headers: string | null; tabHeaders: string | null }> {
  return page.evaluate(PERSISTED);
}

/**
 * Replaces an editor's content the way a user pasting would, checks the editor shows exactly that,
 * then waits for GraphiQL's debounced handlers to take it in (a user takes longer than they do).
 */
async function setEditor(suffix: string, text: string): Promise<void> {
  await editor(suffix).locator(".view-lines").click();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(text);
  await expect.poll(() => editorText(suffix)).toBe(text);
  if (suffix === QUERY) await expect.poll(async () => (await persisted()).query).toBe(text);
  if (suffix === HEADERS) {
    await expect.poll(async () => {
      const p = await persisted();
      return [p.headers, p.tabHeaders];
    }).toEqual([text, text]);
  }
}

async function showHeadersTab(): Promise<void> {
  await page.locator('.graphiql-editor-tools button[data-name="headers"]').click();
  await expect.poll(() => editor(HEADERS).isVisible()).toBe(true);
}

/**
 * Runs the query editor's operation with the toolbar's execute button and waits until the response
 * matches `pattern` or shows errors (so that a failure shows at once, with what the page showed).
 * The previous run's response stays on screen until the new one replaces it, so only a different
 * text counts (each run in this file answers differently from the one before it).
 */
async function runAndWaitFor(pattern: RegExp, timeout = 20_000): Promise<string> {
  const previous = await editorText(RESPONSE);
  await page.locator("button.graphiql-execute-button").click();
  let text = "";
  await expect
    .poll(async () => {
      text = await editorText(RESPONSE);
      return text !== previous && (pattern.test(text) || /"errors"/.test(text));
    }, { timeout, interval: 200 })
    .toBe(true);
  expect(text).toMatch(pattern);
  return text;
}

function connectionInits(): Array<Record<string, unknown> | undefined> {
  return framesSent.map((f) => JSON.parse(f) as { type: string; payload?: Record<string, unknown> }).filter((m) => m.type === "connection_init").map((m) => m.payload);
}

describe.skipIf(skip)(title, () => {
  beforeAll(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} is absent: CI must install Debian's chromium (see .ci/run)`);
    stack = await startTestStack({ worker: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
    });
    context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    // The page is offline: anything that would leave this machine (a CDN, fonts, telemetry) is refused and recorded.
    await context.route(
      (url) => (url.protocol === "http:" || url.protocol === "https:") && !isLocal(url),
      async (route) => {
        blocked.push(route.request().url());
        await route.abort();
      },
    );
    page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("websocket", (ws) => {
      sockets.push(ws.url());
      ws.on("framesent", (frame) => {
        if (typeof frame.payload === "string") framesSent.push(frame.payload);
      });
    });
  });

  afterAll(async () => {
    // The page as the tests left it (also when one failed).
    await page?.screenshot({ path: SCREENSHOT, fullPage: true }).catch(() => undefined);
    await context?.close().catch(() => undefined);
    await browser?.close();
    await stack?.close();
  });

  it("loads offline and, without a key, refuses a query (UNAUTHENTICATED) and a subscription", async () => {
    const response = await page.goto(`${stack.baseUrl}/graphiql`, { waitUntil: "load" });
    expect(response?.status()).toBe(200);
    await expect.poll(() => editor(QUERY).isVisible(), { timeout: 30_000 }).toBe(true);
    expect(await page.title()).toBe("Diffgate GraphiQL");

    // The Headers tab starts with the page's template: an empty key.
    await showHeadersTab();
    expect(JSON.parse(await editorText(HEADERS))).toEqual({ "x-api-key": "" });

    await setEditor(QUERY, "{ me { username } }");
    const text = await runAndWaitFor(/UNAUTHENTICATED/);
    expect(text).not.toMatch(/"username"/);

    // A subscription with the empty key: the server closes the socket (4401) before any event.
    await setEditor(QUERY, `subscription { jobEvents(jobId: "${randomUUID()}") { seq } }`);
    const refused = await runAndWaitFor(/"errors"/);
    expect(refused).not.toMatch(/"seq"/);
    expect(connectionInits()).toEqual([{ "x-api-key": "" }]);
  });

  it("runs a query with the key from the Headers tab", async () => {
    await setEditor(HEADERS, JSON.stringify({ "x-api-key": stack.adminKey }));
    await setEditor(QUERY, "{ me { username } }");
    const text = await runAndWaitFor(/"username":\s*"admin"/);
    expect(text).not.toMatch(/UNAUTHENTICATED/);
  });

  it("runs a subscription over graphql-ws with the same key, to the job's terminal event", async () => {
    const started = await gql(stack.baseUrl, "mutation { runSystemCheck { id } }", {}, { key: stack.adminKey });
    expect(started.body.errors).toBeUndefined();
    const id = started.body.data.runSystemCheck.id as string;

    await setEditor(QUERY, `subscription { jobEvents(jobId: "${id}") { seq type data terminal } }`);
    const text = await runAndWaitFor(/"terminal":\s*true/, 45_000);
    expect(text).toMatch(/"status":\s*"SUCCEEDED"/);
    expect(text).not.toMatch(/"errors"/);

    // It went over the page's own WebSocket to this server, authenticated by the shim in connection_init.
    expect(sockets.length).toBeGreaterThan(0);
    for (const url of sockets) expect(url).toBe(stack.wsUrl);
    const inits = connectionInits();
    expect(inits.length).toBeGreaterThanOrEqual(2);
    expect(inits.at(-1)).toEqual({ "x-api-key": stack.adminKey });
    // The job really ended SUCCEEDED (the page showed its last event).
    const check = await gql(stack.baseUrl, `query($id: ID!) { systemCheck(id: $id) { status } }`, { id }, { key: stack.adminKey });
    expect(check.body.data.systemCheck.status).toBe("SUCCEEDED");
  });

  it("never left the machine and raised no page errors", async () => {
    expect(blocked).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
