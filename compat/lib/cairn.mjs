// Shared helpers of the compatibility suite. Everything goes through the real published
// client: Repository from @sensenet/client-core, queries from @sensenet/query.
//
// The packages' ESM builds lack "type":"module" (they load only where Node detects module
// syntax), so the CJS builds are loaded through createRequire: works on every Node 20.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export const { Repository, isExtendedError } = require('@sensenet/client-core');
export const { Query } = require('@sensenet/query');

export const CAIRN_URL = process.env.CAIRN_URL;
export const CAIRN_ADMIN_KEY = process.env.CAIRN_ADMIN_KEY;
if (!CAIRN_URL || !CAIRN_ADMIN_KEY) {
  throw new Error('set CAIRN_URL (e.g. http://127.0.0.1:8080) and CAIRN_ADMIN_KEY');
}

/**
 * A Repository the way a sensenet app configures it: `token` makes the client add
 * `Authorization: Bearer <token>` to every request (Repository.fetch). The fetch must be
 * given under Node: the default reads `window`.
 */
export function repository({ token = CAIRN_ADMIN_KEY, ...config } = {}) {
  return new Repository({ repositoryUrl: CAIRN_URL, token, ...config }, fetch);
}

/** A name no other test (or earlier run) uses. */
export function uniqueName(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/**
 * Creates a fresh folder under /Root for one test and returns its path; the test's own
 * `t.after` deletes it (DeleteBatch, permanent) whatever the outcome.
 */
export async function testFolder(t, repo, prefix) {
  const name = uniqueName(`compat-${prefix}`);
  const created = await repo.post({ parentPath: '/Root', contentType: 'Folder', content: { Name: name } });
  assert.equal(created.d.Name, name, 'POST answered the created folder');
  const path = `/Root/${name}`;
  assert.equal(created.d.Path, path);
  t.after(async () => {
    try {
      await repo.delete({ idOrPath: path, permanent: true });
    } catch {
      // cleanup only: the delete tests judge DeleteBatch
    }
  });
  return path;
}

/** POST a child and return the created item (`d`). */
export async function create(repo, parentPath, contentType, content, oDataOptions) {
  const res = await repo.post({ parentPath, contentType, content, oDataOptions });
  assert.ok(res && res.d, `POST ${contentType} into ${parentPath} answered {"d":{...}}`);
  return res.d;
}

/**
 * Retries `fn` (which asserts) until it passes or `timeoutMs` runs out, then rethrows its
 * last failure. Cairn's indexer applies writes in the background, so answers that come
 * from the index may lag a write by a moment; read-your-writes itself is judged by its
 * own test in query.test.mjs, without this helper.
 */
export async function eventually(fn, { timeoutMs = 10000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() >= deadline) throw e;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
}

/** Runs a collection query under `path` and returns `d` (with `results` and `__count`). */
export async function query(repo, path, queryOrString, oDataOptions = {}) {
  const q = typeof queryOrString === 'string' ? queryOrString : queryOrString.toString();
  const res = await repo.loadCollection({ path, oDataOptions: { ...oDataOptions, query: q } });
  assert.ok(res && res.d && Array.isArray(res.d.results), `query ${q} answered {"d":{"results":[...]}}`);
  return res.d;
}

/**
 * Waits until the index finds every item of `ids` (a query `Id:(1 2 3)` under `path`), so
 * the fixtures are searchable before a test asserts on query results.
 */
export async function awaitIndexed(repo, path, ids) {
  const q = `Id:(${ids.join(' ')}) .AUTOFILTERS:OFF`;
  await eventually(async () => {
    const d = await query(repo, path, q);
    assert.deepEqual(
      d.results.map((r) => r.Id).sort((a, b) => a - b),
      [...ids].sort((a, b) => a - b),
      `the index finds the ${ids.length} fixture items (${q})`,
    );
  });
}

export const names = (results) => results.map((r) => r.Name);
export const sortedNames = (results) => names(results).sort();

/** Calls fn, expects the client to throw its ExtendedError, returns it. */
export async function clientError(fn) {
  try {
    await fn();
  } catch (e) {
    assert.ok(isExtendedError(e), `the client threw its ExtendedError (got ${e && e.stack})`);
    return e;
  }
  assert.fail('expected the request to fail');
}

/** Asserts sensenet's error body and that the client surfaced its message. */
export function assertSensenetError(err, status, code) {
  assert.equal(err.statusCode, status, `status ${status} (message: ${err.message})`);
  const e = err.body && err.body.error;
  assert.ok(e, `body is {"error":{...}}, got ${JSON.stringify(err.body)}`);
  assert.equal(typeof e.code, 'string');
  if (code) assert.equal(e.code, code);
  assert.equal(typeof e.exceptiontype, 'string');
  assert.equal(e.message && e.message.lang, 'en-us');
  assert.equal(typeof e.message.value, 'string');
  assert.ok(e.message.value.length > 0, 'message.value is not empty');
  // The client takes its Error message from body.error.message.value:
  assert.equal(err.message, e.message.value);
}

/** Choice fields are lists in sensenet's JSON (["News"]). */
export const choice = (v) => (Array.isArray(v) ? v : v == null ? [] : [v]);
