// The 2017 demo flow in headless Chromium over HTTPS (Debian's chromium, through
// playwright-core): run by cli/tests/https.rs against a running demo stack whose CA
// `stack trust` put in the NSS database under TRUSTING_HOME.
//
//   node https_demo.mjs HTTPS_PORT TRUSTING_HOME STRANGER_HOME
//
// No certificate error is ignored: Chromium verifies every page against its NSS database
// (HOME/.pki/nssdb), so a refused certificate fails the navigation. The browser with
// STRANGER_HOME (an empty database) must refuse it. Each step throws with what it expected.
import { launch, step } from "./chromium.mjs";

const [port, trustingHome, strangerHome] = process.argv.slice(2);
const demo = `https://counter-demo.localhost:${port}`;

// A page's body as JSON (the demo answers JSON), with the protocol its navigation used.
async function visit(page, path, wantStatus) {
  const response = await page.goto(`${demo}${path}`);
  if (response.status() !== wantStatus) {
    throw new Error(`${path} answered ${response.status()}, want ${wantStatus}: ${await response.text()}`);
  }
  const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  if (protocol !== "h2") throw new Error(`${path} went over ${protocol}, want h2`);
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const trusting = await launch(trustingHome);
try {
  const context = await trusting.newContext();
  const page = await context.newPage();

  step("logged out: the reader refuses, over a verified certificate and HTTP/2");
  const response = await page.goto(`${demo}/`);
  const security = await response.securityDetails();
  if (!security || security.subjectName !== "counter-demo.localhost") {
    throw new Error(`certificate: ${JSON.stringify(security)}`);
  }
  console.log(`  certificate: ${JSON.stringify(security)}`);
  await visit(page, "/", 403);

  step("login through the alias sets a Secure session cookie");
  await visit(page, "/login", 200);
  const cookies = await context.cookies(demo);
  const session = cookies.find((cookie) => cookie.name === "connect.sid");
  if (!session) throw new Error(`no session cookie: ${JSON.stringify(cookies)}`);
  if (!session.secure || !session.httpOnly) throw new Error(`cookie flags: ${JSON.stringify(session)}`);

  step("increment twice on the writer, read the count on the reader");
  await visit(page, "/increment", 200);
  await visit(page, "/increment", 200);
  const home = await visit(page, "/", 200);
  if (home.count !== 2) throw new Error(`count ${JSON.stringify(home)}, want 2`);

  step("logout: the reader refuses again");
  await visit(page, "/logout", 200);
  await visit(page, "/", 403);
} finally {
  await trusting.close();
}

step("a browser without the CA refuses the certificate");
const stranger = await launch(strangerHome);
try {
  const page = await stranger.newPage();
  let refused = null;
  try {
    await page.goto(`${demo}/`);
  } catch (error) {
    refused = String(error);
  }
  if (!refused || !refused.includes("ERR_CERT")) throw new Error(`not refused: ${refused}`);
  console.log(`  ${refused.split("\n")[0]}`);
} finally {
  await stranger.close();
}
console.log("ok");
