// Rooms as people use them, on two instances of the release build sharing a
// Redis: the room list with counts, who is online, typing, unread counts,
// switching rooms in place, a phone-sized screen, the keyboard alone, and
// axe-core's accessibility rules.
import { expect, Page, test } from "@playwright/test";
import {
  accessibilityViolations,
  join,
  openChat,
  Running,
  say,
  setHidden,
  startProxy,
  startTwoInstances,
  TwoInstances,
  watchErrors,
} from "./harness";

let setup: TwoInstances;
let first: Running;
let second: Running;

test.beforeAll(async () => {
  setup = await startTwoInstances();
  ({ first, second } = setup);
});

test.afterAll(async () => {
  await setup?.stop();
});

async function roomCount(page: Page, room: string, count: number): Promise<void> {
  const item = page.getByTestId("room-list").locator(`[data-testid=room-item][data-room="${room}"]`);
  await expect(item).toContainText(String(count));
}

async function online(page: Page, names: string[]): Promise<void> {
  // The name alone: a moderator's buttons sit beside it in the item.
  await expect(page.getByTestId("online-item").locator(".name")).toHaveText(names);
}

test("two rooms on two instances: lists, counts, online lists, typing and switching", async ({ browser }) => {
  const alice = await (await browser.newContext()).newPage();
  const bob = await (await browser.newContext()).newPage();
  const carol = await (await browser.newContext()).newPage();
  const errors = [alice, bob, carol].flatMap(watchErrors);
  await openChat(alice, `${first.url}/r/alpha`);
  await openChat(bob, `${second.url}/r/alpha`);
  await openChat(carol, `${second.url}/r/beta`);
  await expect(alice.getByTestId("current-room")).toHaveText("alpha");
  await expect(carol.getByTestId("current-room")).toHaveText("beta");
  await join(alice, "alice");
  await join(bob, "bob");
  await join(carol, "carol");

  for (const page of [alice, bob, carol]) {
    await roomCount(page, "alpha", 2);
    await roomCount(page, "beta", 1);
  }
  await online(alice, ["alice", "bob"]);
  await online(bob, ["alice", "bob"]);
  await online(carol, ["carol"]);
  await expect(alice.getByTestId("participant-count")).toHaveText("2");
  await expect(carol.getByTestId("participant-count")).toHaveText("1");

  // Messages stay in their room.
  await say(alice, "only for alpha");
  await expect(bob.getByTestId("message-text").last()).toHaveText("only for alpha");
  await say(carol, "only for beta");
  await expect(carol.getByTestId("message-text").last()).toHaveText("only for beta");
  await expect(alice.getByTestId("message-text")).toHaveText(["only for alpha"]);
  await expect(bob.getByTestId("message-text")).toHaveText(["only for alpha"]);

  // Typing shows for the others only, and goes when the message is sent.
  await bob.getByTestId("message-input").pressSequentially("typing a", { delay: 20 });
  await expect(alice.getByTestId("typing-indicator")).toContainText("bob");
  await expect(bob.getByTestId("typing-indicator")).toHaveCount(0);
  await expect(carol.getByTestId("typing-indicator")).toHaveCount(0);
  await bob.getByTestId("message-input").press("Enter");
  await expect(alice.getByTestId("message-text").last()).toHaveText("typing a");
  await expect(alice.getByTestId("typing-indicator")).toHaveCount(0);

  // Typing that stops without a message fades after a few seconds.
  await bob.getByTestId("message-input").pressSequentially("hm", { delay: 20 });
  await expect(alice.getByTestId("typing-indicator")).toContainText("bob");
  await expect(alice.getByTestId("typing-indicator")).toHaveCount(0, { timeout: 10_000 });
  await bob.getByTestId("message-input").fill("");

  // A hidden tab counts what it missed in its title; beta shows unread in
  // alpha's list once beta talks.
  await setHidden(alice, true);
  await say(bob, "while you look away");
  await expect(alice).toHaveTitle("(1) alpha · Chat");
  await setHidden(alice, false);
  await expect(alice).toHaveTitle("alpha · Chat");
  await say(carol, "news in beta");
  await expect(
    alice.locator('[data-testid=room-item][data-room="beta"] [data-testid=unread-mark]'),
  ).toBeVisible();

  // Carol switches to alpha through the list: same page, new room.
  await carol.locator('[data-testid=room-item][data-room="alpha"] a').click();
  await expect(carol).toHaveURL(/\/r\/alpha$/);
  await expect(carol.getByTestId("current-room")).toHaveText("alpha");
  await expect(carol.getByTestId("connection-status")).toHaveText("connected");
  await online(carol, ["alice", "bob", "carol"]);
  await online(alice, ["alice", "bob", "carol"]);
  await roomCount(alice, "alpha", 3);
  await expect(alice.getByTestId("room-list").locator('[data-room="beta"]')).toHaveCount(0);
  await expect(carol.getByTestId("message-text")).not.toContainText(["only for beta"]);
  await say(carol, "hello alpha");
  await expect(alice.getByTestId("message-text").last()).toHaveText("hello alpha");

  // And to a new room by name.
  await carol.getByTestId("room-input").fill("gamma");
  await carol.getByTestId("room-button").click();
  await expect(carol).toHaveURL(/\/r\/gamma$/);
  await expect(carol.getByTestId("current-room")).toHaveText("gamma");
  await online(carol, ["carol"]);
  await online(alice, ["alice", "bob"]);
  await roomCount(alice, "gamma", 1);
  await say(carol, "first in gamma");
  await expect(carol.getByTestId("message-text")).toHaveText(["first in gamma"]);

  // Back to where it was: the browser's history works too.
  await carol.goBack();
  await expect(carol.getByTestId("current-room")).toHaveText("alpha");
  await expect(carol).toHaveTitle("alpha · Chat");
  await expect(carol.getByTestId("connection-status")).toHaveText("connected");
  await online(alice, ["alice", "bob", "carol"]);
  await carol.goForward();
  await expect(carol.getByTestId("current-room")).toHaveText("gamma");
  await online(carol, ["carol"]);
  await carol.goBack();
  await expect(carol.getByTestId("current-room")).toHaveText("alpha");
  await online(alice, ["alice", "bob", "carol"]);
  expect(errors).toEqual([]);
  for (const page of [alice, bob, carol]) await page.context().close();
});

test("a room chosen while the network is down is entered as soon as it is back", async ({ browser }) => {
  const proxy = await startProxy(first.url);
  const page = await (await browser.newContext()).newPage();
  await openChat(page, `${proxy.url}/r/before`);
  await join(page, "wanderer");
  proxy.cut();
  await expect(page.getByTestId("connection-status")).toHaveText("disconnected");
  // Long enough for the reconnect attempts to back off to their longest
  // pause (5 to 10 s).
  await page.waitForTimeout(12_000);
  await say(page, "typed while offline");
  proxy.restore();
  await page.getByTestId("room-input").fill("after");
  await page.getByTestId("room-button").click();
  await expect(page.getByTestId("current-room")).toHaveText("after");
  // At once, not at the end of the pause.
  await expect(page.getByTestId("connection-status")).toHaveText("connected", { timeout: 3_000 });
  // What was typed for the old room is not sent to the new one: it is back
  // in the composer, and the page says why.
  await expect(page.getByTestId("error")).toContainText("Not sent");
  await expect(page.getByTestId("message-input")).toHaveValue("typed while offline");
  await expect(page.getByTestId("message")).toHaveCount(0);
  await page.getByTestId("message-input").press("Enter");
  await expect(page.getByTestId("message-text")).toHaveText(["typed while offline"]);
  await expect(page.getByTestId("error")).toHaveCount(0);
  await page.context().close();
  await proxy.stop();
});

test("a message in flight when the connection breaks is sent once after it comes back", async ({ browser }) => {
  const proxy = await startProxy(first.url);
  const page = await (await browser.newContext()).newPage();
  const observer = await (await browser.newContext()).newPage();
  // The default room: opening another would spend this address's share of
  // new rooms (NEW_ROOMS_PER_MIN), which the other tests need.
  await openChat(page, proxy.url);
  await openChat(observer, second.url);
  await join(page, "sender");
  const ours = (reader: Page) =>
    reader.getByTestId("message-text").filter({ hasText: /^(lost on the way|echo lost|fence)$/ });
  // Lost on the way to the server: without an id and a second try it would
  // never arrive.
  proxy.lose("page");
  await say(page, "lost on the way");
  // Not stored yet: the page says it is on its way, until its echo.
  await expect(page.getByTestId("pending-message")).toContainText("lost on the way");
  await expect(page.getByTestId("pending-message")).toBeVisible();
  await page.waitForTimeout(300);
  proxy.cut();
  proxy.restore();
  await expect(page.getByTestId("connection-status")).toHaveText("connected", { timeout: 15_000 });
  await expect(ours(observer)).toHaveText(["lost on the way"]);
  // Stored, but its echo lost: sent again, it must not be doubled.
  proxy.lose("server");
  await say(page, "echo lost");
  await expect(ours(observer)).toHaveText(["lost on the way", "echo lost"]);
  proxy.cut();
  proxy.restore();
  await expect(page.getByTestId("connection-status")).toHaveText("connected", { timeout: 15_000 });
  await say(page, "fence");
  for (const reader of [page, observer]) {
    await expect(ours(reader)).toHaveText(["lost on the way", "echo lost", "fence"]);
  }
  await expect(page.getByTestId("pending-message")).toBeHidden();
  for (const p of [page, observer]) await p.context().close();
  await proxy.stop();
});

test("a room link opened with Ctrl goes to a new tab and leaves the page where it is", async ({ browser }) => {
  const context = await browser.newContext();
  const [dora, erin] = [await context.newPage(), await context.newPage()];
  await openChat(erin, `${first.url}/r/delta`);
  await join(erin, "erin");
  await openChat(dora, `${first.url}/r/epsilon`);
  await join(dora, "dora");
  await roomCount(dora, "delta", 1);
  const [tab] = await Promise.all([
    context.waitForEvent("page"),
    dora.locator('[data-testid=room-item][data-room="delta"] a').click({ modifiers: ["Control"] }),
  ]);
  await expect(tab).toHaveURL(/\/r\/delta$/);
  await expect(tab.getByTestId("current-room")).toHaveText("delta");
  await expect(dora).toHaveURL(/\/r\/epsilon$/);
  await expect(dora.getByTestId("current-room")).toHaveText("epsilon");
  await online(dora, ["dora"]);
  await context.close();
});

test("a phone-sized screen fits, and the keyboard alone joins and sends", async ({ browser }) => {
  const phone = await (await browser.newContext({ viewport: { width: 375, height: 740 } })).newPage();
  await openChat(phone, `${first.url}/r/phones`);
  const overflow = () => phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(await overflow()).toBeLessThanOrEqual(0);

  // Tab to the nickname field, type, Enter; Tab on to the composer.
  const focused = () => phone.evaluate(() => document.activeElement?.getAttribute("data-testid"));
  for (let i = 0; i < 30 && (await focused()) !== "pseudo-input"; i++) await phone.keyboard.press("Tab");
  expect(await focused()).toBe("pseudo-input");
  await phone.keyboard.type("thumbs");
  await phone.keyboard.press("Enter");
  await expect(phone.getByTestId("message-input")).toBeEnabled();
  for (let i = 0; i < 10 && (await focused()) !== "message-input"; i++) await phone.keyboard.press("Tab");
  expect(await focused()).toBe("message-input");
  await phone.keyboard.type("sent with the keyboard");
  await phone.keyboard.press("Enter");
  await expect(phone.getByTestId("message-text").last()).toHaveText("sent with the keyboard");
  // Focus stays in the composer for the next message.
  expect(await focused()).toBe("message-input");
  await phone.keyboard.type("and again");
  await phone.keyboard.press("Enter");
  await expect(phone.getByTestId("message-text").last()).toHaveText("and again");

  // An error clears with the next thing that works.
  await phone.getByTestId("send-button").click();
  await expect(phone.getByTestId("error")).toContainText("empty");
  await say(phone, "fine now");
  await expect(phone.getByTestId("error")).toHaveCount(0);
  expect(await overflow()).toBeLessThanOrEqual(0);
  await phone.context().close();
});

for (const [name, viewport] of [
  ["desktop", { width: 1280, height: 800 }],
  ["phone", { width: 375, height: 740 }],
] as const) {
  for (const scheme of ["light", "dark"] as const) {
    test(`axe-core finds nothing before and after joining (${name}, ${scheme})`, async ({ browser }) => {
      const page = await (await browser.newContext({ viewport, colorScheme: scheme })).newPage();
      await openChat(page, second.url);
      expect(await accessibilityViolations(page)).toEqual([]);
      await join(page, `axe-${name}-${scheme}`);
      await say(page, "checking contrast");
      await expect(page.getByTestId("message-text").last()).toHaveText("checking contrast");
      expect(await accessibilityViolations(page)).toEqual([]);
      await page.context().close();
    });
  }
}
