// The original's scenario: two instances of the release build on one Redis,
// one browser on each, in sync.
import { expect, test } from "@playwright/test";
import { freePort, join, openChat, Running, say, startProxy, startServer, startTwoInstances, TwoInstances } from "./harness";

let setup: TwoInstances;
let redis: Running;
let first: Running;
let second: Running;

test.beforeAll(async () => {
  setup = await startTwoInstances();
  ({ redis, first, second } = setup);
});

test.afterAll(async () => {
  await setup?.stop();
});

test("two browsers on two instances share messages and the count", async ({ browser }) => {
  const a = await (await browser.newContext()).newPage();
  const b = await (await browser.newContext()).newPage();
  await openChat(a, first.url);
  await openChat(b, second.url);
  await join(a, "on-first");
  await join(b, "on-second");
  await expect(a.getByTestId("participant-count")).toHaveText("2");
  await expect(b.getByTestId("participant-count")).toHaveText("2");

  await say(a, "from the first instance");
  await expect(b.getByTestId("message").last()).toContainText("from the first instance");
  await say(b, "from the second instance");
  for (const page of [a, b]) {
    const texts = page.getByTestId("message").getByTestId("message-text");
    await expect(texts).toHaveText(["from the first instance", "from the second instance"]);
  }
  await a.context().close();
  await expect(b.getByTestId("participant-count")).toHaveText("1");
  await b.context().close();
});

test("a browser rides through a restart of its server and misses nothing", async ({ browser }) => {
  const port = String(await freePort());
  const old = await startServer({ REDIS_URL: redis.url, PORT: port });
  const rider = await (await browser.newContext()).newPage();
  const witness = await (await browser.newContext()).newPage();
  await openChat(rider, old.url);
  await openChat(witness, second.url);
  await join(rider, "rider");
  await join(witness, "witness");
  await expect(rider.getByTestId("participant-count")).toHaveText("2");

  // A new process takes the port (SO_REUSEPORT), then the old one drains.
  const fresh = await startServer({ REDIS_URL: redis.url, PORT: port });
  const stopped = old.stop();
  await say(witness, "while you were away");
  await stopped;

  const missed = rider.getByTestId("message-text").filter({ hasText: "while you were away" });
  await expect(missed).toHaveCount(1);
  await expect(rider.getByTestId("connection-status")).toHaveText("connected");
  await expect(rider.getByTestId("message-input")).toBeEnabled();
  await say(rider, "back");
  await expect(witness.getByTestId("message").last().getByTestId("message-author")).toHaveText("rider");
  await expect(witness.getByTestId("participant-count")).toHaveText("2");
  // The rider came back within the reclaim window: nobody saw it leave.
  await expect(witness.getByTestId("system-message").filter({ hasText: "rider left" })).toHaveCount(0);
  await rider.context().close();
  await witness.context().close();
  await fresh.stop();
});

test("a page that loses its connection while others talk catches up once, in order", async ({ browser }) => {
  const proxy = await startProxy(first.url);
  const room = "/?room=catch-up";
  const away = await (await browser.newContext()).newPage();
  const here = await (await browser.newContext()).newPage();
  const there = await (await browser.newContext()).newPage();
  await openChat(away, proxy.url + room);
  await openChat(here, second.url + room);
  await openChat(there, first.url + room);
  await join(away, "away");
  await join(here, "here");
  await join(there, "there");
  await say(here, "before");
  await expect(away.getByTestId("message-text").last()).toHaveText("before");

  proxy.cut();
  await expect(away.getByTestId("connection-status")).not.toHaveText("connected");
  // Two people on two instances talk at once while the page is away.
  await Promise.all(
    [here, there].map(async (page, who) => {
      for (let i = 0; i < 4; i++) await say(page, `while away ${who}.${i}`);
    }),
  );
  await expect(here.getByTestId("message-text")).toHaveCount(9);
  proxy.restore();

  await expect(away.getByTestId("connection-status")).toHaveText("connected");
  const texts = (page: typeof away) => page.getByTestId("message-text").allTextContents();
  const reference = await texts(here);
  expect(await texts(there)).toEqual(reference);
  await expect.poll(() => texts(away)).toEqual(reference);
  await expect(away.getByTestId("recovery-notice")).toHaveCount(0);
  for (const page of [away, here, there]) await page.context().close();
  await proxy.stop();
});
