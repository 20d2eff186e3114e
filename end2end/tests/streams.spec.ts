// Room streams seen from the page: when events could not be recovered (here:
// Redis restarted empty, so the room's stream began a new epoch), the page
// says so instead of skipping silently, and talk resumes.
import { expect, test } from "@playwright/test";
import { join, openChat, say, startRedis, startServer } from "./harness";

test("after Redis restarts empty the page says earlier messages could not be recovered", async ({ browser }) => {
  let redis = await startRedis();
  const server = await startServer({ REDIS_URL: redis.url });
  const page = await (await browser.newContext()).newPage();
  await openChat(page, server.url);
  await join(page, "keeper");
  await say(page, "before the restart");
  await expect(page.getByTestId("message-text").last()).toHaveText("before the restart");
  await expect(page.getByTestId("recovery-notice")).toHaveCount(0);

  const port = Number(new URL(redis.url).port);
  await redis.stop();
  redis = await startRedis(port);
  const notice = page.getByTestId("recovery-notice");
  await expect(notice).toBeVisible();
  await expect(notice).toContainText("could not be recovered");

  await say(page, "after the restart");
  await expect(page.getByTestId("message-text").last()).toHaveText("after the restart");
  await notice.getByRole("button", { name: "Dismiss" }).click();
  await expect(notice).toHaveCount(0);
  await page.context().close();
  await server.stop();
  await redis.stop();
});
