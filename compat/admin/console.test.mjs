// The admin console in a real browser: Debian's chromium, headless, driven by
// playwright-core, against a real `cairn serve` (started by crates/cairn/tests/admin.rs with
// every index file of a backup slowed down, so that a backup can be watched and canceled).
//   CAIRN_URL=... CAIRN_ADMIN_KEY=... [CHROMIUM=/usr/bin/chromium] [SCREENSHOTS=docs/admin]
//   node --test compat/admin/console.test.mjs
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';

const URL = process.env.CAIRN_URL;
const KEY = process.env.CAIRN_ADMIN_KEY;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS;
if (!URL || !KEY) throw new Error('set CAIRN_URL and CAIRN_ADMIN_KEY');

/** Waits until `locator`'s text matches `pattern` (polling, with a deadline). */
async function textMatches(locator, pattern, timeout = 60000) {
  const deadline = Date.now() + timeout;
  let last = '';
  while (Date.now() < deadline) {
    last = (await locator.textContent()) || '';
    if (pattern.test(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${pattern} (last: ${JSON.stringify(last)})`);
}

/** Screenshots of the page at a desktop's width and a phone's. */
async function shots(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  for (const width of [1280, 375]) {
    await page.setViewportSize({ width, height: width === 375 ? 812 : 900 });
    await page.screenshot({ path: join(SHOTS, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

async function adminGet(path) {
  const r = await fetch(`${URL}${path}`, { headers: { Authorization: `Bearer ${KEY}` } });
  assert.equal(r.status, 200, path);
  return r.json();
}

test('an administrator uses the console as a person would', async (t) => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  await page.goto(`${URL}/admin`);
  const keyField = page.getByLabel("Administrator's key");
  await keyField.waitFor();
  await shots(page, 'login');

  // A wrong key: refused, with the server's message in the page.
  await keyField.fill('certainly-not-the-key');
  await page.getByRole('button', { name: 'Log in' }).click();
  await textMatches(page.locator('#error'), /not the admin key/);
  assert.equal(await page.locator('#nav').isVisible(), false, 'still logged out');

  // The right key, typed and sent with Enter (the form works from the keyboard).
  await keyField.fill(KEY);
  await keyField.press('Enter');
  await page.getByRole('navigation', { name: 'Sections' }).waitFor();
  assert.equal(await keyField.inputValue(), '', 'the key is not kept in the page');
  const html = await page.content();
  assert.ok(!html.includes(KEY), 'the key appears nowhere in the page');
  assert.ok(!page.url().includes(KEY), 'nor in its URL');
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'cairn_admin');
  assert.ok(session, 'a session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');

  // Overview: the index's last activity as GetIndexProperties says it.
  const props = await adminGet("/odata.svc/('Root')/GetIndexProperties");
  await textMatches(page.locator('#last-activity'), new RegExp(`^${props.IndexingActivityStatus.LastActivityId}$`));
  await textMatches(page.locator('#completion-state'), new RegExp(`^${props.CompletionState.replace(/[()]/g, '\\$&')}$`));
  await textMatches(page.locator('#documents'), new RegExp(`^${props.DocumentCount}$`));
  assert.equal(await page.locator('#lag-chart polyline').count(), 1, 'the lag chart has a line');
  await shots(page, 'overview');

  // Backups. First a slow index backup, canceled (the first: a later one would hard-link
  // the files of the one before, and be quick).
  await page.getByRole('link', { name: 'Backups' }).click();
  await page.getByRole('button', { name: 'Back up the index' }).click();
  await textMatches(page.locator('#backup-state'), /^Executing$/);
  await page.getByRole('button', { name: 'Cancel the running backup' }).click();
  await textMatches(page.locator('#backup-state'), /^Canceled$/);

  // A repository backup, its progress bar moving to Finished.
  await page.getByRole('button', { name: 'Back up the repository' }).click();
  await textMatches(page.locator('#backup-state'), /^(Started|Executing)$/);
  const bar = page.locator('#backup-progress');
  const seen = new Set();
  const deadline = Date.now() + 60000;
  for (;;) {
    const state = await page.locator('#backup-state').textContent();
    const [value, max] = await bar.evaluate((p) => [p.value, p.max]);
    if (state === 'Executing' && value > 0 && value < max) seen.add('moving');
    if (state === 'Finished') {
      assert.equal(value, max, 'a finished backup fills the bar');
      break;
    }
    assert.ok(Date.now() < deadline, `the backup did not finish (state ${state})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(seen.has('moving'), 'the bar was seen between empty and full');
  await page.locator('#finished tbody tr').first().waitFor();
  await shots(page, 'backups');

  // Verify the finished backup from its row.
  await page.locator('#finished tbody tr').first().getByRole('button', { name: /^Verify/ }).click();
  await textMatches(page.locator('#message'), /verified: \d+ files/);

  // Policies: the configured one, with its schedule.
  await page.getByRole('link', { name: 'Policies' }).click();
  await textMatches(page.locator('#policy-table tbody'), /nightly/);
  await shots(page, 'policies');

  // Integrity: 0 differences.
  await page.getByRole('link', { name: 'Integrity' }).click();
  await page.getByRole('button', { name: 'Run the integrity check' }).click();
  await textMatches(page.locator('#integrity-summary'), /^0 differences/);
  await shots(page, 'integrity');

  // An error is shown, not swallowed: a backup verify of a name that is not there.
  const answer = await page.evaluate(async () => {
    const s = await (await fetch('/admin/api/session')).json();
    const r = await fetch('/admin/api/backups/verify', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.Csrf },
      body: JSON.stringify({ name: 'no-such-backup' }),
    });
    return r.status;
  });
  assert.equal(answer, 404);

  // Log out: the login form again, and the session is gone on the server too.
  await page.getByRole('button', { name: 'Log out' }).click();
  await keyField.waitFor();
  const after = await page.evaluate(async () => (await fetch('/admin/api/overview')).status);
  assert.equal(after, 401);
  assert.deepEqual(consoleErrors, [], 'no script error in the page');
});
