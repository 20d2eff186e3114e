// The original's scenario: two instances of the release build on one Redis,
// one browser on each, in sync.
import { expect, test } from "@playwright/test";
import { join, openChat, Running, say, startRedis, startServer } from "./harness";

let redis: Running;
let first: Running;
let second: Running;

test.beforeAll(async () => {
  redis = await startRedis();
  first = await startServer({ REDIS_URL: redis.url });
  second = await startServer({ REDIS_URL: redis.url });
});

test.afterAll(async () => {
  await first?.stop();
  await second?.stop();
  await redis?.stop();
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
