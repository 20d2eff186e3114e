// The PM2 workflow of the original README, on the release binary through
// deploy/ecosystem.config.js: start, status, logs, reload, stop. PM2 runs
// with its own home directory so it never touches a PM2 already in use.
import { expect, test } from "@playwright/test";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import WebSocket from "ws";
import { freePort } from "./harness";

const root = path.resolve(__dirname, "..", "..");
const ecosystem = path.join(root, "deploy", "ecosystem.config.js");
const pm2Bin = path.join(__dirname, "..", "node_modules", ".bin", "pm2");
const pm2Home = mkdtempSync(path.join(os.tmpdir(), "pm2-"));
let port = 0;

function pm2(...args: string[]): string {
  return execFileSync(pm2Bin, args, {
    cwd: root,
    env: { ...process.env, PM2_HOME: pm2Home, PORT: String(port), RELAY_PORT: "0", ADMIN_PORT: "0" },
    encoding: "utf8",
  });
}

async function health(): Promise<{ instance: string } | null> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`);
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

test.afterAll(() => {
  try {
    pm2("kill");
  } finally {
    rmSync(pm2Home, { recursive: true, force: true });
  }
});

test("the ecosystem file is valid and points at the release binary", () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const config = require(ecosystem);
  expect(config.apps[0].name).toBe("websocket-server");
  expect(existsSync(config.apps[0].script)).toBe(true);
});

test("pm2 start, status, logs, reload and stop", async () => {
  port = await freePort();
  pm2("start", ecosystem);
  await expect.poll(health, { timeout: 15_000 }).not.toBeNull();
  const first = (await health())!.instance;

  const list = JSON.parse(pm2("jlist"));
  expect(list[0].name).toBe("websocket-server");
  expect(list[0].pm2_env.status).toBe("online");
  expect(pm2("status", "websocket-server")).toContain("online");

  // A client connected across the reload is told why it is closed.
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  await new Promise((resolve) => ws.once("open", resolve));
  const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
  pm2("reload", "websocket-server");
  expect(await closed).toBe(1012);
  await expect.poll(async () => (await health())?.instance, { timeout: 15_000 }).not.toBe(first);

  const logs = pm2("logs", "websocket-server", "--nostream", "--lines", "50");
  expect(logs).toContain("listening");
  expect(logs).toContain("draining");

  pm2("stop", "websocket-server");
  await expect.poll(health, { timeout: 15_000 }).toBeNull();
  expect(pm2("status", "websocket-server")).toContain("stopped");
});
