// Opens a preview in headless Chromium through the edge and checks that the
// app renders and reacts: the template's heading, then a button click.
//   node browser.mjs <preview url> <edge host:port>
import { createRequire } from "node:module";

// playwright-core lives in the repo's .tools (installed by `make tools`).
const require = createRequire(`${process.env.BLAZE_NODE_MODULES}/`);
const { chromium } = require("playwright-core");

const [url, edge] = process.argv.slice(2);
const host = new URL(url).hostname;
const browser = await chromium.launch({
  executablePath: process.env.BLAZE_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // preview hosts are *.localhost names; map them to the edge explicitly
    `--host-resolver-rules=MAP ${host} ${edge.split(":")[0]}`,
  ],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url, { waitUntil: "load", timeout: 60000 });
  const heading = page.locator("h1");
  await heading.waitFor({ timeout: 60000 });
  console.log("HEADING", (await heading.innerText()).trim());
  const button = page.getByRole("button", { name: /Clicked/ });
  await button.click();
  await page.getByRole("button", { name: /Clicked 1 time/ }).waitFor({ timeout: 10000 });
  console.log("AFTER CLICK", (await button.innerText()).trim());
  if (errors.length) {
    console.log("PAGE ERRORS", errors.join(" | "));
    process.exitCode = 1;
  }
} finally {
  await browser.close();
}
