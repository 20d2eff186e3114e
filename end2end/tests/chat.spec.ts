// The chat on one instance (embedded mode), in Debian's Chromium.
import { expect, test } from "@playwright/test";
import { join, openChat, Running, say, startServer, watchErrors } from "./harness";

let server: Running;

test.beforeAll(async () => {
  server = await startServer();
});

test.afterAll(async () => {
  await server.stop();
});

test("two people chat, see counts, renames and leaves", async ({ browser }) => {
  const alice = await (await browser.newContext()).newPage();
  const bob = await (await browser.newContext()).newPage();
  const errors = [...watchErrors(alice), ...watchErrors(bob)];
  await openChat(alice, server.url);
  await openChat(bob, server.url);

  await expect(alice.getByTestId("message-input")).toBeDisabled();
  await join(alice, "alice");
  await join(bob, "bob");
  await expect(alice.getByTestId("participant-count")).toHaveText("2");
  await expect(bob.getByTestId("participant-count")).toHaveText("2");
  await expect(alice.getByTestId("system-message").last()).toContainText("bob joined");

  await say(alice, "hello bob");
  await say(bob, "hi alice");
  for (const page of [alice, bob]) {
    const messages = page.getByTestId("message");
    await expect(messages).toHaveCount(2);
    await expect(messages.nth(0).getByTestId("message-author")).toHaveText("alice");
    await expect(messages.nth(0).getByTestId("message-text")).toHaveText("hello bob");
    await expect(messages.nth(1).getByTestId("message-author")).toHaveText("bob");
    await expect(messages.nth(1).getByTestId("message-time")).toHaveText(/\d/);
  }
  // Own messages are set apart.
  await expect(alice.getByTestId("message").nth(0)).toHaveClass(/own/);
  await expect(alice.getByTestId("message").nth(1)).not.toHaveClass(/own/);
  // The input was cleared after sending.
  await expect(alice.getByTestId("message-input")).toHaveValue("");

  // The same controls change the nickname.
  await bob.getByTestId("pseudo-input").fill("robert");
  await bob.getByTestId("join-button").click();
  await expect(alice.getByTestId("system-message").last()).toContainText("bob is now robert");

  await bob.context().close();
  await expect(alice.getByTestId("participant-count")).toHaveText("1");
  await expect(alice.getByTestId("system-message").last()).toContainText("robert left");
  expect(errors).toEqual([]);
  await alice.context().close();
});

test("text is shown as text", async ({ browser }) => {
  const page = await (await browser.newContext()).newPage();
  let dialogs = 0;
  page.on("dialog", async (dialog) => {
    dialogs += 1;
    await dialog.dismiss();
  });
  await openChat(page, server.url);
  await join(page, "mallory");
  const payload = "<img src=x onerror=alert(1)>";
  await say(page, payload);
  const text = page.getByTestId("message").last().getByTestId("message-text");
  await expect(text).toHaveText(payload);
  await expect(page.getByTestId("messages").locator("img")).toHaveCount(0);
  expect(dialogs).toBe(0);
  await page.context().close();
});

test("invalid input is refused with a visible reason", async ({ browser }) => {
  const page = await (await browser.newContext()).newPage();
  await openChat(page, server.url);
  await page.getByTestId("pseudo-input").fill("   ");
  await page.getByTestId("join-button").click();
  await expect(page.getByTestId("error")).toContainText("empty");
  await page.getByTestId("pseudo-input").fill("x".repeat(33));
  await page.getByTestId("join-button").click();
  await expect(page.getByTestId("error")).toContainText("32");

  await join(page, "taken");
  const other = await (await browser.newContext()).newPage();
  await openChat(other, server.url);
  await other.getByTestId("pseudo-input").fill("TAKEN");
  await other.getByTestId("join-button").click();
  await expect(other.getByTestId("error")).toContainText("taken");
  await expect(other.getByTestId("message-input")).toBeDisabled();

  await page.getByTestId("message-input").fill("y".repeat(2001));
  await page.getByTestId("send-button").click();
  await expect(page.getByTestId("error")).toContainText("2000");
  await page.getByTestId("message-input").fill("   ");
  await page.getByTestId("send-button").click();
  await expect(page.getByTestId("error")).toContainText("empty");
  await page.context().close();
  await other.context().close();
});

test("a reload reconnects and keeps the nickname", async ({ browser }) => {
  const page = await (await browser.newContext()).newPage();
  await openChat(page, server.url);
  await join(page, "reloader");
  await say(page, "before reload");
  await expect(page.getByTestId("message").last()).toContainText("before reload");
  await page.reload();
  await expect(page.getByTestId("connection-status")).toHaveText("connected");
  // The history comes back and the tab rejoins with its session.
  await expect(page.getByTestId("message").last()).toContainText("before reload");
  await expect(page.getByTestId("message-input")).toBeEnabled();
  await say(page, "after reload");
  await expect(page.getByTestId("message").last().getByTestId("message-author")).toHaveText("reloader");
  await page.context().close();
});
