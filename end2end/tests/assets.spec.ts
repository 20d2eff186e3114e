// How the page's files travel: precompressed, with hashed names cached for a
// year, the HTML revalidated, and a WASM that stays small.
import { expect, test } from "@playwright/test";
import { get } from "node:http";
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
 * The WASM's ceiling, gzipped (brotli does better). It was 223 KB before
 * rooms, online list and typing, and 285 KB with them; it is about 139 KB
 * since the page dropped the router, type-erased views and serde. The
 * docs/benchmarks.md ("Page weight") says where the bytes go.
 */
const WASM_GZIP_BUDGET = 150 * 1024;

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

/** The body's size as sent, before any decoding (fetch would decode it). */
function sentSize(url: string, acceptEncoding: string): Promise<{ encoding?: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    get(url, { headers: { "accept-encoding": acceptEncoding } }, (response) => {
      let bytes = 0;
      response.on("data", (chunk: Buffer) => (bytes += chunk.length));
      response.on("end", () => resolve({ encoding: response.headers["content-encoding"], bytes }));
      response.on("error", reject);
    }).on("error", reject);
  });
}

test(`the WASM stays under ${WASM_GZIP_BUDGET / 1024} KB gzipped, as built and as sent`, async () => {
  const { wasm } = await assetPaths();
  const bytes = Buffer.from(await (await fetch(server.url + wasm, { headers: { "accept-encoding": "identity" } })).arrayBuffer());
  const gzipped = gzipSync(bytes, { level: 9 }).length;
  const sentGzip = await sentSize(server.url + wasm, "gzip");
  const sentBrotli = await sentSize(server.url + wasm, "br");
  expect(sentGzip.encoding).toBe("gzip");
  expect(sentBrotli.encoding).toBe("br");
  console.log(
    `WASM: ${bytes.length} bytes, ${gzipped} gzipped, sent as ${sentGzip.bytes} (gzip) or ${sentBrotli.bytes} (brotli)`,
  );
  expect(gzipped).toBeLessThanOrEqual(WASM_GZIP_BUDGET);
  // What a browser without brotli downloads.
  expect(sentGzip.bytes).toBeLessThanOrEqual(WASM_GZIP_BUDGET);
});
