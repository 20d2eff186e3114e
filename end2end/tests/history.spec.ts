// Durable rooms seen from the page: the embedded default keeps a room's
// messages on disk; after a restart the page shows the last ones and scrolls
// back through all of them, page by page, without moving what the reader
// looks at, until "Beginning of the room"; a screen reader hears each page.
import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { accessibilityViolations, openChat, startServer } from "./harness";

test("the page scrolls back through 300 messages after a restart", async ({ browser }) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "chat-history-"));
  try {
    const first = await startServer({ DATA_DIR: dataDir });
    for (let n = 0; n < 300; n++) {
      const answer = await fetch(`${first.admin}/api/rooms/long/messages`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ author: "bot", text: `m${n}` }),
      });
      expect(answer.status).toBe(201);
    }
    await first.stop();

    const server = await startServer({ DATA_DIR: dataDir });
    try {
      const page = await (await browser.newContext()).newPage();
      await openChat(page, `${server.url}/r/long`);
      const texts = page.getByTestId("message-text");
      await expect(texts).toHaveCount(100);
      await expect(texts.first()).toHaveText("m200");
      const load = page.getByTestId("load-earlier");
      const list = page.getByTestId("messages");

      // Reaching the top loads the page before, above, and what the reader
      // looked at stays where it was.
      await list.evaluate((el) => (el.scrollTop = 0));
      await expect(texts).toHaveCount(150);
      await expect(texts.first()).toHaveText("m150");
      await expect(texts.filter({ hasText: /^m200$/ })).toBeInViewport();
      await expect(page.getByRole("status").filter({ hasText: "Earlier messages loaded" })).toHaveText(
        "Earlier messages loaded (1)",
      );

      // From the keyboard: the button (focusing it may reach the top too).
      await load.focus();
      await page.keyboard.press("Enter");
      await expect(async () => expect(await texts.count()).toBeGreaterThanOrEqual(200)).toPass();
      while (await page.getByTestId("beginning").isHidden()) {
        await load.press("Enter");
        await page.waitForTimeout(100);
      }
      await expect(texts).toHaveCount(300);
      const all = await texts.allTextContents();
      expect(all).toEqual(Array.from({ length: 300 }, (_, n) => `m${n}`));
      await expect(page.getByTestId("beginning")).toHaveText("Beginning of the room");
      await expect(load).toBeHidden();
      expect(await accessibilityViolations(page)).toEqual([]);
    } finally {
      await server.stop();
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
