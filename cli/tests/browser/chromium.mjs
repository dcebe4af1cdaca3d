// What every browser test here shares: Debian's headless Chromium through playwright-core,
// and a step line for the Rust test's output.
import { chromium } from "playwright-core";

export const step = (what) => console.log(`step: ${what}`);

// Chromium (CHROMIUM, else /usr/bin/chromium) with a HOME of its own when given (its NSS
// database lives there).
export function launch(home) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    ...(home ? { env: { ...process.env, HOME: home } } : {}),
  });
}

// A page on the dashboard's viewport that records page errors in `failures`. The dashboard
// forbids eval (its CSP); playwright's waitForFunction needs it, so CSP is bypassed here.
export async function dashboardPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1100 }, bypassCSP: true });
  const page = await context.newPage();
  const failures = [];
  page.on("pageerror", (error) => failures.push(String(error)));
  return { context, page, failures };
}
