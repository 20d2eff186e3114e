// Cross-site WebSocket hijacking, in a real browser: the chat page served by
// the server connects, while a page from another origin (another port,
// served here) that opens the chat socket is refused, unless listed in
// ALLOWED_ORIGINS.
import { createServer, Server as HttpServer } from "node:http";
import { expect, Page, test } from "@playwright/test";
import { freePort, openChat, Running, startServer } from "./harness";

// Opens the WebSocket named by ?target= and records what happened.
const foreignPage = `<!doctype html>
<title>another site</title>
<body>
<script>
  const socket = new WebSocket(new URLSearchParams(location.search).get("target"));
  socket.onopen = () => { document.body.dataset.result = "open"; };
  socket.onclose = (e) => { document.body.dataset.result ??= "closed " + e.code; };
</script>
</body>`;

let foreign: HttpServer;
let foreignOrigin: string;
const servers: Running[] = [];

test.beforeAll(async () => {
  const port = await freePort();
  foreign = createServer((_, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(foreignPage);
  });
  await new Promise<void>((resolve) => foreign.listen(port, "127.0.0.1", resolve));
  foreignOrigin = `http://127.0.0.1:${port}`;
});

test.afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await new Promise((resolve) => foreign.close(resolve));
});

async function foreignSocket(page: Page, server: Running): Promise<void> {
  const target = server.url.replace("http://", "ws://") + "/ws";
  await page.goto(`${foreignOrigin}/?target=${encodeURIComponent(target)}`);
}

test("only allowed origins open the chat socket", async ({ browser }) => {
  const server = await startServer();
  servers.push(server);
  const own = await (await browser.newContext()).newPage();
  await openChat(own, server.url);

  const elsewhere = await (await browser.newContext()).newPage();
  await foreignSocket(elsewhere, server);
  // The browser reports a refused handshake as an abnormal close (1006).
  await expect(elsewhere.locator("body")).toHaveAttribute("data-result", "closed 1006");
  const metrics = await (await fetch(`${server.admin}/metrics`)).text();
  expect(metrics).toMatch(/^ws_rejected_total\{kind="chat",reason="origin"\} 1$/m);

  // The same page may connect once its origin is listed.
  const listing = await startServer({ ALLOWED_ORIGINS: `self,${foreignOrigin}` });
  servers.push(listing);
  const allowed = await (await browser.newContext()).newPage();
  await foreignSocket(allowed, listing);
  await expect(allowed.locator("body")).toHaveAttribute("data-result", "open");
  const ownToo = await (await browser.newContext()).newPage();
  await openChat(ownToo, listing.url);
});
