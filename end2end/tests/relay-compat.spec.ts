// A client that is not Rust (Node's `ws`, as the original server's users
// had) against the relay protocol, on the dedicated relay port.
import { expect, test } from "@playwright/test";
import { createHmac } from "node:crypto";
import WebSocket from "ws";
import { freePort, Running, startRedis, startServer } from "./harness";

let redis: Running;
let server: Running;
let relayUrl: string;

/**
 * A server with a dedicated relay port. Without SO_REUSEPORT: a port found
 * free can be taken before the server binds it by a server of another
 * worker, and SO_REUSEPORT would let both hold it and share its
 * connections (some then reach the other server's page: HTTP 200). A port
 * taken meanwhile makes the start fail instead, and another port is tried.
 */
async function withRelayPort(env: Record<string, string>): Promise<{ server: Running; url: string }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      const server = await startServer({ ...env, RELAY_PORT: String(port), REUSE_PORT: "false" });
      return { server, url: `ws://127.0.0.1:${port}` };
    } catch (err) {
      if (attempt === 5) throw err;
    }
  }
}

test.beforeAll(async () => {
  redis = await startRedis();
  ({ server, url: relayUrl } = await withRelayPort({ REDIS_URL: redis.url }));
});

test.afterAll(async () => {
  await server?.stop();
  await redis?.stop();
});

/** Opens a socket (to the shared server's relay unless told otherwise) and collects what it receives. */
async function connect(
  url: string = relayUrl,
  options?: WebSocket.ClientOptions,
): Promise<{ ws: WebSocket; inbox: string[]; closed: Promise<number> }> {
  const ws = new WebSocket(url, options);
  const inbox: string[] = [];
  ws.on("message", (data) => inbox.push(data.toString()));
  const closed = new Promise<number>((resolve) => ws.on("close", (code) => resolve(code)));
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  return { ws, inbox, closed };
}

async function registered(action: string) {
  const client = await connect();
  client.ws.send(JSON.stringify({ action, role: "compat" }));
  await expect.poll(() => client.inbox.length).toBe(1);
  const reply = JSON.parse(client.inbox.shift()!);
  expect(reply).toEqual({ type: "registered", id: expect.any(String), action });
  return client;
}

test("registration without an action is refused with close 1008", async () => {
  const client = await connect();
  client.ws.send(JSON.stringify({ hello: "world" }));
  expect(await client.closed).toBe(1008);
  expect(JSON.parse(client.inbox[0])).toMatchObject({ type: "error", error: expect.any(String) });
});

test("messages reach the other clients of the action, byte for byte", async () => {
  const sender = await registered("compat");
  const receiver = await registered("compat");
  const bystander = await registered("elsewhere");
  const frame = '{"temperature": 21.5, "unit":"C"}';
  sender.ws.send(frame);
  await expect.poll(() => receiver.inbox).toEqual([frame]);
  sender.ws.send("not json");
  await expect.poll(() => sender.inbox.length).toBe(1);
  expect(JSON.parse(sender.inbox[0]).type).toBe("error");
  await new Promise((r) => setTimeout(r, 300));
  expect(receiver.inbox).toEqual([frame]);
  expect(bystander.inbox).toEqual([]);
  for (const c of [sender, receiver, bystander]) c.ws.close();
});

/** An HS256 JWT, signed with Node's own crypto. */
function mint(secret: string, claims: object): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  const signature = createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

test("with RELAY_AUTH=required, a Node ws client registers with a token, in the message or a Bearer header", async () => {
  const secret = "compat secret for the end-to-end test";
  const { server: guarded, url } = await withRelayPort({ RELAY_AUTH: "required", AUTH_JWT_SECRET: secret });
  try {
    const token = mint(secret, { actions: ["compat.*"], sub: "node", exp: Math.floor(Date.now() / 1000) + 600 });
    const open = (options?: WebSocket.ClientOptions) => connect(url, options);
    const inMessage = await open();
    inMessage.ws.send(JSON.stringify({ action: "compat.lights", token }));
    await expect.poll(() => inMessage.inbox.length).toBe(1);
    expect(JSON.parse(inMessage.inbox.shift()!)).toMatchObject({ type: "registered", action: "compat.lights" });

    const withHeader = await open({ headers: { Authorization: `Bearer ${token}` } });
    withHeader.ws.send(JSON.stringify({ action: "compat.lights" }));
    await expect.poll(() => withHeader.inbox.length).toBe(1);
    expect(JSON.parse(withHeader.inbox.shift()!)).toMatchObject({ type: "registered" });

    const frame = '{"on":true}';
    inMessage.ws.send(frame);
    await expect.poll(() => withHeader.inbox).toEqual([frame]);

    const anonymous = await open();
    anonymous.ws.send(JSON.stringify({ action: "compat.lights" }));
    expect(await anonymous.closed).toBe(1008);
    expect(JSON.parse(anonymous.inbox[0])).toMatchObject({ type: "error" });
    for (const c of [inMessage, withHeader]) c.ws.close();
  } finally {
    await guarded.stop();
  }
});
