// The dashboard's actions in headless Chromium: run by cli/tests/dashboard.rs against a
// stack of the hello fixture with two deployments, FIRST (stopped) and SECOND (live).
//
//   node dashboard_actions.mjs PORT FIRST SECOND
//
// Clicks rollback on FIRST, remove on SECOND, restart on FIRST's instance, then restart all on
// FIRST, and waits after each for the page to show what the daemon did (the overview comes
// from its event stream).
// The Rust test checks `stack ls` and the answers after it.
import { dashboardPage, launch, step } from "./chromium.mjs";

const [port, first, second] = process.argv.slice(2);

const browser = await launch();
try {
  const { page, failures } = await dashboardPage(browser);
  // The page alerts what a refused action answered: that is a failure here.
  page.on("dialog", async (dialog) => {
    failures.push(`alert: ${dialog.message()}`);
    await dialog.dismiss();
  });
  await page.goto(`http://stack.localhost:${port}/`);
  const rowOf = (id) => page.locator("#deployments tbody tr", { hasText: id });
  // The deployments table's state of one row: its name cell's class and the instances' text.
  const shown = (id) => page.evaluate((id) => {
    const tr = [...document.querySelectorAll("#deployments tbody tr")]
      .find((row) => row.cells[0].textContent === id);
    return tr && { live: tr.cells[0].classList.contains("live"), state: tr.cells[1].textContent,
      instances: tr.querySelector(".instances").textContent };
  }, id);
  const waitShown = async (what, id, test) => {
    await page.waitForFunction(([id, test]) => {
      const tr = [...document.querySelectorAll("#deployments tbody tr")]
        .find((row) => row.cells[0].textContent === id);
      const row = tr && { live: tr.cells[0].classList.contains("live"), state: tr.cells[1].textContent,
        instances: tr.querySelector(".instances").textContent };
      return new Function("row", `return ${test}`)(row);
    }, [id, test], { timeout: 15000 }).catch(async (error) => {
      throw new Error(`${what}: ${id} shows ${JSON.stringify(await shown(id))}: ${error}`);
    });
  };

  step("both deployments listed, the second one live");
  await waitShown("second live", second, "row && row.live && /READY/.test(row.instances)");
  await waitShown("first kept", first, "row && !row.live");
  if (await rowOf(second).getByRole("button", { name: "rollback" }).count()) {
    throw new Error("the live deployment offers rollback");
  }
  if (await rowOf(first).getByRole("button", { name: "+1" }).count()) {
    throw new Error("a stopped deployment offers to scale");
  }

  step("rollback to the first deployment");
  await rowOf(first).getByRole("button", { name: "rollback" }).click();
  await waitShown("first live again", first, "row && row.live && /READY/.test(row.instances)");
  await waitShown("second no longer live", second, "row && !row.live");

  step("remove the second deployment");
  await rowOf(second).getByRole("button", { name: "remove" }).click();
  await rowOf(second).waitFor({ state: "detached", timeout: 15000 });

  step("restart the first deployment's instance");
  const before = await shown(first);
  if (!/↻0/.test(before.instances)) throw new Error(`restarts before: ${before.instances}`);
  await rowOf(first).getByRole("button", { name: "restart", exact: true }).click();
  await waitShown("restarted and ready", first, "row && /#0 READY :\\d+ ↻1/.test(row.instances)");

  step("restart all of the first deployment's instances");
  await rowOf(first).getByRole("button", { name: "restart all" }).click();
  await waitShown("restarted again and ready", first, "row && /#0 READY :\\d+ ↻2/.test(row.instances)");

  if (failures.length) throw new Error(`page errors: ${failures.join("; ")}`);
  console.log("ok");
} finally {
  await browser.close();
}
