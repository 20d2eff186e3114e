// How the page's files travel: precompressed, with hashed names cached for a
// year, the HTML revalidated, and a WASM that stays small.
import { expect, test } from "@playwright/test";
import { gzipSync } from "node:zlib";
import { RunningServer, startServer } from "./harness";

let server: RunningServer;

test.beforeAll(async () => {
  server = await startServer();
});

test.afterAll(async () => {
  await server.stop();
});

/**
 * The WASM's ceiling, gzipped (brotli does better): what it weighs today
 * (about 285 KB), so that it cannot grow unnoticed. The goal is 150 KB and
 * is not met yet: the framework's reactive graph and views take most of it,
 * then the JSON (de)serialization of the protocol and the router; see the
 * README's "Page weight" section for the breakdown.
 */
const WASM_GZIP_BUDGET = 300 * 1024;

async function assetPaths(): Promise<{ js: string; wasm: string; css: string }> {
  const html = await (await fetch(server.url)).text();
  const find = (pattern: RegExp) => {
    const found = html.match(pattern);
    expect(found, `${pattern} in the page`).not.toBeNull();
    return found![1];
  };
  return {
    js: find(/(\/pkg\/chat\.[0-9a-zA-Z_-]+\.js)/),
    wasm: find(/(\/pkg\/chat\.[0-9a-zA-Z_-]+\.wasm)/),
    css: find(/(\/pkg\/chat\.[0-9a-zA-Z_-]+\.css)/),
  };
}

test("the page is revalidated; its hashed files are compressed and immutable", async () => {
  const page = await fetch(server.url, { headers: { "accept-encoding": "br, gzip" } });
  expect(page.headers.get("cache-control")).toBe("no-cache");
  expect(page.headers.get("content-encoding")).toBe("br");
  const paths = await assetPaths();
  for (const path of Object.values(paths)) {
    for (const [accepted, encoding] of [
      ["br, gzip", "br"],
      ["gzip", "gzip"],
    ]) {
      // Node's fetch would decode the body and hide the encoding's size.
      const response = await fetch(server.url + path, { headers: { "accept-encoding": accepted } });
      expect(response.status, path).toBe(200);
      expect(response.headers.get("content-encoding"), `${path} for ${accepted}`).toBe(encoding);
      expect(response.headers.get("cache-control"), path).toBe("public, max-age=31536000, immutable");
    }
    const plain = await fetch(server.url + path, { headers: { "accept-encoding": "identity" } });
    expect(plain.headers.get("content-encoding"), path).toBeNull();
  }
});

test(`the WASM stays under ${WASM_GZIP_BUDGET / 1024} KB gzipped`, async () => {
  const { wasm } = await assetPaths();
  const bytes = Buffer.from(await (await fetch(server.url + wasm, { headers: { "accept-encoding": "identity" } })).arrayBuffer());
  const gzipped = gzipSync(bytes, { level: 9 }).length;
  console.log(`WASM: ${bytes.length} bytes, ${gzipped} gzipped`);
  expect(gzipped).toBeLessThanOrEqual(WASM_GZIP_BUDGET);
});
