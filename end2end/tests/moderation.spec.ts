// Moderation in the page, across two instances of the release build on one
// Redis with access tokens: a moderator deletes a message and removes a
// person on the other instance, every page updates; a second tab of the
// same session takes the nickname and the first one says so and waits.
import { expect, Page, test } from "@playwright/test";
import { createHmac } from "node:crypto";
import { accessibilityViolations, join, openChat, Running, RunningServer, say, startRedis, startServer } from "./harness";

const SECRET = "an end-to-end secret that is long enough";

/** An HS256 JWT, as a backend would mint it. */
function token(name: string, roles: string[] = []): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: name, name, roles, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

let redis: Running;
let first: RunningServer;
let second: RunningServer;

test.beforeAll(async () => {
  redis = await startRedis();
  const env = { REDIS_URL: redis.url, CHAT_AUTH: "required", AUTH_JWT_SECRET: SECRET };
  first = await startServer(env);
  second = await startServer(env);
});

test.afterAll(async () => {
  await first?.stop();
  await second?.stop();
  await redis?.stop();
});

async function member(browser: import("@playwright/test").Browser, url: string, name: string, roles: string[] = []): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await openChat(page, `${url}/?token=${token(name, roles)}`);
  await join(page, name);
  return page;
}

test("a moderator deletes a message and removes a person on the other instance", async ({ browser }) => {
  const moderator = await member(browser, first.url, "mod", ["moderator"]);
  const alice = await member(browser, second.url, "alice");
  const bob = await member(browser, second.url, "bob");
  await expect(moderator.getByTestId("participant-count")).toHaveText("3");

  await say(alice, "something rude");
  await say(alice, "somthing else");
  const rude = moderator.getByTestId("message").filter({ hasText: "something rude" });
  await expect(rude).toHaveCount(1);
  // Authors see edit and delete on their own messages only; others see neither.
  await expect(bob.locator('[data-testid="delete-button"]:visible')).toHaveCount(0);
  await expect(alice.locator('[data-testid="edit-button"]:visible')).toHaveCount(2);

  // The author fixes a typo (the browser's own prompt).
  alice.once("dialog", (dialog) => dialog.accept("something else"));
  await alice.getByTestId("message").filter({ hasText: "somthing else" }).getByTestId("edit-button").click();
  for (const page of [moderator, alice, bob]) {
    const fixed = page.getByTestId("message").filter({ hasText: "something else" });
    await expect(fixed.getByTestId("edited-mark")).toBeVisible();
  }

  // The moderator deletes, from the keyboard.
  await rude.getByTestId("delete-button").focus();
  await moderator.keyboard.press("Enter");
  for (const page of [moderator, alice, bob]) {
    await expect(page.getByTestId("message-text").filter({ hasText: "something rude" })).toHaveCount(0);
    await expect(page.getByTestId("message-text").filter({ hasText: "message deleted" })).toHaveCount(1);
  }
  expect(await accessibilityViolations(moderator)).toEqual([]);

  // Kick bob (on the other instance): his page says why and stops.
  await moderator.getByTestId("online-item").filter({ hasText: "bob" }).getByTestId("kick-button").click();
  await expect(bob.getByTestId("error")).toContainText("removed from the room by mod");
  await expect(bob.getByTestId("connection-status")).toHaveText("disconnected");
  for (const page of [moderator, alice]) {
    await expect(page.getByTestId("system-message").filter({ hasText: "bob was removed by mod" })).toHaveCount(1);
    await expect(page.getByTestId("participant-count")).toHaveText("2");
  }
  // He may come back when he chooses to.
  await bob.getByTestId("resume-button").click();
  await expect(bob.getByTestId("connection-status")).toHaveText("connected");
  await expect(moderator.getByTestId("participant-count")).toHaveText("3");
  for (const page of [moderator, alice, bob]) await page.context().close();
});

test("a second tab of the same session takes the nickname; the first says so and waits", async ({ browser }) => {
  const context = await browser.newContext();
  // A duplicated tab carries the first tab's session storage.
  await context.addInitScript(() => {
    window.sessionStorage.setItem("chat.session", "6f9619ff-8b86-d011-b42d-00cf4fc964ff");
  });
  const watcher = await member(browser, first.url, "watcher");
  const tab = await context.newPage();
  await openChat(tab, `${first.url}/?token=${token("twin")}`);
  await join(tab, "twin");
  await expect(watcher.getByTestId("participant-count")).toHaveText("2");

  const duplicate = await context.newPage();
  await openChat(duplicate, `${second.url}/?token=${token("twin")}`);
  await join(duplicate, "twin");
  await expect(tab.getByTestId("error")).toContainText("continues in another tab");
  await expect(tab.getByTestId("connection-status")).toHaveText("disconnected");
  // Still one twin, and nobody announced a leave.
  await say(duplicate, "from the new tab");
  await expect(watcher.getByTestId("message-text").filter({ hasText: "from the new tab" })).toHaveCount(1);
  await expect(watcher.getByTestId("participant-count")).toHaveText("2");
  await expect(watcher.getByTestId("system-message").filter({ hasText: "twin left" })).toHaveCount(0);
  await context.close();
  await watcher.context().close();
});
