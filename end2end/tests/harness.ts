// Real processes for the end-to-end tests: a private redis-server and server
// instances of the release build, each on a free port, stopped after use.
import { ChildProcess, spawn } from "node:child_process";
import { AddressInfo, connect, createServer, Socket } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";
import { expect, Page } from "@playwright/test";

const root = path.resolve(__dirname, "..", "..");
const binary = process.env.SERVER_BIN ?? path.join(root, "target", "release", "server");

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export interface Running {
  url: string;
  stop(): Promise<void>;
}

export interface RunningServer extends Running {
  /** The private admin port (`/metrics`). */
  admin: string;
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
}

/** Starts a private redis-server, on a free port unless given one (a restart). */
export async function startRedis(port?: number): Promise<Running> {
  port ??= await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      if (line.includes("Ready to accept connections")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`redis-server exited with ${code}`)));
  });
  return { url: `redis://127.0.0.1:${port}`, stop: stopper(child) };
}

/** Starts the release server on a free port; resolves once it listens. */
export async function startServer(env: Record<string, string> = {}): Promise<RunningServer> {
  const child = spawn(binary, [], {
    // Not the project root: a developer's .env there must not leak into tests.
    cwd: os.tmpdir(),
    env: {
      ...process.env,
      BIND: "127.0.0.1",
      PORT: "0",
      RELAY_PORT: "0",
      ADMIN_PORT: "0",
      LOG_FORMAT: "json",
      RUST_LOG: "info",
      LEPTOS_SITE_ROOT: path.join(root, "target", "site"),
      // Rooms in the process: test servers run side by side.
      DATA_DIR: "memory",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const { http, admin } = await new Promise<{ http: string; admin: string }>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      try {
        const event = JSON.parse(line);
        if (event.message === "listening") resolve({ http: event.http, admin: event.admin });
      } catch {
        // not a log line of ours
      }
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { url: `http://${http}`, admin: `http://${admin}`, stop: stopper(child) };
}

/** A TCP proxy in front of a server, to take a page's network away. */
export interface Proxy {
  url: string;
  /** Drops every connection through the proxy and refuses new ones. */
  cut(): void;
  /** Keeps connections open but throws away what one side sends from
   * now on (a message lost on the way, or its answer). */
  lose(from: "page" | "server"): void;
  /** Lets connections through again (and stops losing). */
  restore(): void;
  stop(): Promise<void>;
}

export async function startProxy(target: string): Promise<Proxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  let open = true;
  let losing: "page" | "server" | null = null;
  const server = createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(port), hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
      socket.on("error", () => socket.destroy());
    }
    client.on("data", (bytes) => losing !== "page" && upstream.write(bytes));
    upstream.on("data", (bytes) => losing !== "server" && client.write(bytes));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port: listening } = server.address() as AddressInfo;
  const dropAll = () => sockets.forEach((socket) => socket.destroy());
  return {
    url: `http://127.0.0.1:${listening}`,
    cut() {
      open = false;
      dropAll();
    },
    lose(from) {
      losing = from;
    },
    restore() {
      open = true;
      losing = null;
    },
    stop: () =>
      new Promise((resolve) => {
        dropAll();
        server.close(() => resolve());
      }),
  };
}

/** Opens the chat and waits until the page is hydrated and connected. */
export async function openChat(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await expect(page.locator("[data-hydrated=true]")).toBeVisible();
  await expect(page.getByTestId("connection-status")).toHaveText("connected");
}

export async function join(page: Page, pseudo: string): Promise<void> {
  await page.getByTestId("pseudo-input").fill(pseudo);
  await page.getByTestId("join-button").click();
  await expect(page.getByTestId("message-input")).toBeEnabled();
}

export async function say(page: Page, text: string): Promise<void> {
  await page.getByTestId("message-input").fill(text);
  await page.getByTestId("message-input").press("Enter");
}

/** Collects console errors and page errors, for a "no errors" assertion. */
export function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  page.on("pageerror", (err) => errors.push(err.message));
  return errors;
}

/** Runs axe-core in the page; resolves to its violations, one line each. */
export async function accessibilityViolations(page: Page): Promise<string[]> {
  await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  return page.evaluate(async () => {
    // Injected just above.
    const axe = (window as unknown as { axe: { run(): Promise<{ violations: { id: string; impact: string; nodes: { target: string[] }[] }[] }> } }).axe;
    const { violations } = await axe.run();
    return violations.map((v) => `${v.impact} ${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
}

/** Pretends the tab is hidden (or visible again), as switching tabs does. */
export async function setHidden(page: Page, hidden: boolean): Promise<void> {
  await page.evaluate((hidden) => {
    Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

/** A private Redis with two servers on it: the scale-out setup. */
export interface TwoInstances {
  redis: Running;
  first: RunningServer;
  second: RunningServer;
  stop(): Promise<void>;
}

export async function startTwoInstances(): Promise<TwoInstances> {
  const redis = await startRedis();
  const first = await startServer({ REDIS_URL: redis.url });
  const second = await startServer({ REDIS_URL: redis.url });
  return {
    redis,
    first,
    second,
    async stop() {
      await first.stop();
      await second.stop();
      await redis.stop();
    },
  };
}
