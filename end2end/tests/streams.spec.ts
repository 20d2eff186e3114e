// Room streams seen from the page: a message that cannot be stored (Redis
// away) is refused and kept in the composer; when events could not be
// recovered (Redis restarted empty, so the room's stream began a new epoch),
// the page says so instead of skipping silently, and talk resumes.
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
  // The message cannot be stored: the page says so and keeps the text.
  const input = page.getByTestId("message-input");
  await say(page, "while Redis is away");
  await expect(page.getByTestId("error")).toContainText("not sent");
  await expect(input).toHaveValue("while Redis is away");

  redis = await startRedis(port);
  // Sent again as it was kept, until the server takes it (it may refuse
  // it again for the moment it takes to see Redis back).
  await expect(async () => {
    if ((await input.inputValue()) !== "") await input.press("Enter");
    await expect(page.getByTestId("message-text").last()).toHaveText("while Redis is away", {
      timeout: 1_000,
    });
  }).toPass();
  await expect(input).toHaveValue("");
  // The room's stream began a new epoch: earlier events may be missing.
  const notice = page.getByTestId("recovery-notice");
  await expect(notice).toBeVisible();
  await expect(notice).toContainText("could not be recovered");
  await notice.getByRole("button", { name: "Dismiss" }).click();
  await expect(notice).toHaveCount(0);
  await page.context().close();
  await server.stop();
  await redis.stop();
});
