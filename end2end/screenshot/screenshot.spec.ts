// The README's screenshot: rooms, the online list and typing, as alice sees
// them. Run through screenshot.config.ts.
import { expect, test } from "@playwright/test";
import * as path from "node:path";
import { join, openChat, say, startRedis, startServer } from "../tests/harness";

test("screenshot", async ({ browser }) => {
  const redis = await startRedis();
  const server = await startServer({ REDIS_URL: redis.url });
  const page = async (width = 1100, height = 640) =>
    (await browser.newContext({ viewport: { width, height } })).newPage();
  const [alice, bob, carol, dave] = [await page(), await page(), await page(), await page()];
  await openChat(dave, `${server.url}/r/rust`);
  await join(dave, "dave");
  for (const [who, name] of [[alice, "alice"], [bob, "bob"], [carol, "carol"]] as const) {
    await openChat(who, server.url);
    await join(who, name);
  }
  await say(alice, "Hi both! Shall we move the release to Friday?");
  await say(bob, "Fine by me, the load test is green.");
  await say(carol, "Friday works. I'll update the changelog.");
  await expect(alice.getByTestId("online-item")).toHaveCount(3);
  await expect(alice.getByTestId("room-item")).toHaveCount(2);
  await bob.getByTestId("message-input").pressSequentially("One more", { delay: 30 });
  await expect(alice.getByTestId("typing-indicator")).toContainText("bob");
  await alice.screenshot({ path: path.resolve(__dirname, "..", "..", "docs", "screenshot.png") });
  await server.stop();
  await redis.stop();
});
