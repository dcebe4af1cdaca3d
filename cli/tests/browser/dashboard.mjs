// Drives the dashboard in headless Chromium (Debian's, through playwright-core): run by
// cli/tests/dashboard.rs against a running demo stack.
//
//   node dashboard.mjs PORT SCREENSHOT
//
// Each step throws with what it waited for; the Rust test checks the exit status and, after
// it, `stack ls`. Chromium resolves every *.localhost name to loopback itself.
import { execFileSync } from "node:child_process";
import { dashboardPage, launch, step } from "./chromium.mjs";

const [port, screenshot] = process.argv.slice(2);
const dashboard = `http://stack.localhost:${port}/`;
const demo = `http://counter-demo.localhost:${port}`;

const browser = await launch();
try {
  const { context, page, failures } = await dashboardPage(browser);
  await page.goto(dashboard);

  step("deployments listed");
  await page.locator("#deployments tbody tr", { hasText: "writer-" }).waitFor({ timeout: 10000 });
  await page.locator("#deployments tbody tr", { hasText: "reader-" }).waitFor({ timeout: 10000 });

  step("a login in the browser, through the alias");
  const demoPage = await context.newPage();
  const login = await demoPage.goto(`${demo}/login`);
  if (login.status() !== 200) throw new Error(`/login answered ${login.status()}`);
  await demoPage.goto(`${demo}/increment`);

  step("a curl request shows within 1 s with its rule, deployment and instance");
  execFileSync("curl", ["-sf", "-o", "/dev/null", "-H", "Host: counter-demo.localhost",
    `http://127.0.0.1:${port}/increment?from=curl`]);
  const sent = Date.now();
  const row = page.locator("#requests tbody tr", { hasText: "/increment?from=curl" });
  await row.waitFor({ timeout: 1000 });
  const shownAfter = Date.now() - sent;
  const cells = await row.locator("td").allTextContents();
  // time method host path status ms in out rule deployment instance session
  if (cells[8] !== "2") throw new Error(`rule ${cells[8]}, want 2: ${cells}`);
  if (!cells[9].startsWith("writer-")) throw new Error(`deployment ${cells[9]}: ${cells}`);
  if (cells[10] === "-") throw new Error(`no instance: ${cells}`);
  if (cells[4] !== "200") throw new Error(`status ${cells[4]}: ${cells}`);
  console.log(`  shown ${shownAfter} ms after curl returned: ${cells.join(" | ")}`);
  // The browser's own request carried its session: 8 characters, never more.
  const browserRow = page.locator("#requests tbody tr", { hasText: "/increment" }).filter({ hasText: "counter-demo.localhost" }).last();
  const session = (await browserRow.locator("td").allTextContents())[11];
  if (!/^[A-Za-z0-9_-]{8}$/.test(session)) throw new Error(`session column ${session}`);
  await row.click();
  // The headers come from a fetch the click starts: wait for them, not for the placeholder.
  const headersShown = page.locator("#request-headers", { hasText: "host: counter-demo.localhost" });
  await headersShown.waitFor({ timeout: 5000 }).catch(async () => {
    throw new Error(`headers: ${await page.locator("#request-headers").textContent()}`);
  });

  step("the log view follows reader");
  await page.locator("#log-target").selectOption("reader");
  await page.locator("#logs .line").first().waitFor({ timeout: 5000 });
  const linesBefore = await page.locator("#logs .line").count();

  step("scale reader to 2 from the page");
  const readerRow = page.locator("#deployments tbody tr", { hasText: "reader-" });
  await readerRow.getByRole("button", { name: "+1" }).click();
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll("#deployments tbody tr")]
      .find((tr) => tr.textContent.includes("reader-"));
    return row && (row.querySelector(".instances").textContent.match(/READY/g) || []).length === 2;
  }, null, { timeout: 30000 });
  // The second instance's start is followed live.
  await page.waitForFunction((before) => document.querySelectorAll("#logs .line").length > before,
    linesBefore, { timeout: 10000 });
  await page.locator("#log-filter").fill("reader.1");
  const shownLines = await page.locator("#logs .line:visible").count();
  if (shownLines === 0) throw new Error("the filter hides reader.1's lines");
  await page.locator("#log-filter").fill("");

  step("the sessions view shows the login, decoded, and deletes it");
  await page.locator("#sessions-refresh").click();
  const sessionRow = page.locator("#sessions tbody tr", { hasText: '"user"' });
  await sessionRow.first().waitFor({ timeout: 5000 }).catch(async (error) => {
    throw new Error(`no session with a user: ${await page.locator("#sessions").textContent()}: ${error}`);
  });
  const sessionCells = await sessionRow.first().locator("td").allTextContents();
  if (sessionCells[0] !== session) throw new Error(`session ${sessionCells[0]}, the requests showed ${session}`);
  if (!sessionCells[2].includes('"count":1')) throw new Error(`data ${sessionCells[2]}`);
  // A tab behind another draws no frames, and a screenshot of it waits for one.
  await page.bringToFront();
  await page.screenshot({ path: screenshot, fullPage: true, timeout: 15000 });
  await sessionRow.first().getByRole("button", { name: "delete" }).click();
  await sessionRow.first().waitFor({ state: "detached", timeout: 5000 });
  const after = await demoPage.goto(`${demo}/`);
  if (after.status() !== 403) throw new Error(`after the delete, / answered ${after.status()}`);

  if (failures.length) throw new Error(`page errors: ${failures.join("; ")}`);
  console.log("ok");
} finally {
  await browser.close();
}
