// Errors reach the client with sensenet's body:
// {"error":{"code":"...","exceptiontype":"...","message":{"lang":"en-us","value":"..."}}}
// and the client's Error.message is message.value (Repository.getErrorFromResponse).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repository, testFolder, create, clientError, assertSensenetError, Query } from '../lib/cairn.mjs';

const repo = repository();

test('404: load of a missing path, a missing id, and children of a missing folder', async (t) => {
  const root = await testFolder(t, repo, 'err-404');
  const byPath = await clientError(() => repo.load({ idOrPath: `${root}/does-not-exist` }));
  assertSensenetError(byPath, 404);
  const byId = await clientError(() => repo.load({ idOrPath: 2147480000 }));
  assertSensenetError(byId, 404);
  const children = await clientError(() => repo.loadCollection({ path: `${root}/no-folder` }));
  assertSensenetError(children, 404);
  const patch = await clientError(() => repo.patch({ idOrPath: `${root}/nothing`, content: { DisplayName: 'x' } }));
  assertSensenetError(patch, 404);
  const post = await clientError(() =>
    repo.post({ parentPath: `${root}/no-parent`, contentType: 'Folder', content: { Name: 'orphan' } }),
  );
  assertSensenetError(post, 404);
});

test('400 with message.value for a bad content query', async (t) => {
  const root = await testFolder(t, repo, 'err-query');
  for (const bad of ['Name:(unclosed', "Rating:['1' TO", 'AND OR', 'Name:"unterminated']) {
    const err = await clientError(() => repo.loadCollection({ path: root, oDataOptions: { query: bad } }));
    assertSensenetError(err, 400, 'InvalidContentQuery');
  }
  // the same through count()
  const err = await clientError(() => repo.count({ path: root, oDataOptions: { query: 'Name:(unclosed' } }));
  assertSensenetError(err, 400, 'InvalidContentQuery');
  // and a builder query with a value that breaks the quoting (the builder does not escape)
  const broken = new Query((x) => x.inTree(root).and.equals('Name', "it's")).toString();
  assert.equal(broken, `InTree:"${root}" AND Name:'it's'`);
  // sensenet's own parser reads it leniently (`Name:'it' OR s'`); what must never happen is a
  // server fault: the answer is a collection or a 400 with sensenet's body.
  try {
    const r = await repo.loadCollection({ path: root, oDataOptions: { query: broken } });
    assert.ok(Array.isArray(r.d.results));
  } catch (e) {
    assertSensenetError(e, 400, 'InvalidContentQuery');
  }
});

test('400 for a bad $filter and a bad $orderby', async (t) => {
  const root = await testFolder(t, repo, 'err-filter');
  await create(repo, root, 'Article', { Name: 'x' });
  const filter = await clientError(() => repo.loadCollection({ path: root, oDataOptions: { filter: 'Index gt' } }));
  assertSensenetError(filter, 400);
  const filter2 = await clientError(() => repo.loadCollection({ path: root, oDataOptions: { filter: "startswith(Name,'x'" } }));
  assertSensenetError(filter2, 400);
  const order = await clientError(() => repo.loadCollection({ path: root, oDataOptions: { orderby: [['Name', 'sideways']] } }));
  assertSensenetError(order, 400);
});

test('400 for bad content: unknown type, wrong value type, bad choice', async (t) => {
  const root = await testFolder(t, repo, 'err-content');
  const type = await clientError(() => repo.post({ parentPath: root, contentType: 'NoSuchType', content: { Name: 'x' } }));
  assertSensenetError(type, 400);
  const value = await clientError(() =>
    repo.post({ parentPath: root, contentType: 'Article', content: { Name: 'y', ReadCount: 'many' } }),
  );
  assertSensenetError(value, 400);
  assert.ok(value.message.includes('ReadCount'), `the message names the field: ${value.message}`);
  const opt = await clientError(() =>
    repo.post({ parentPath: root, contentType: 'Article', content: { Name: 'z', Category: ['Gossip'] } }),
  );
  assertSensenetError(opt, 400);
  const made = await create(repo, root, 'Article', { Name: 'ok' });
  const patch = await clientError(() => repo.patch({ idOrPath: made.Id, content: { Pinned: 'yes' } }));
  assertSensenetError(patch, 400);
  // nothing half-written
  const { d } = await repo.loadCollection({ path: root });
  assert.deepEqual(d.results.map((r) => r.Name), ['ok']);
});

test('409 for a name that already exists in the folder', async (t) => {
  const root = await testFolder(t, repo, 'err-409');
  await create(repo, root, 'Folder', { Name: 'twice' });
  const err = await clientError(() => repo.post({ parentPath: root, contentType: 'Folder', content: { Name: 'twice' } }));
  assertSensenetError(err, 409);
});

test('401 for a wrong key, 401/403 with no key', async () => {
  const wrong = repository({ token: 'not-the-admin-key' });
  const err = await clientError(() => wrong.load({ idOrPath: '/Root' }));
  assertSensenetError(err, 401);
  const none = repository({ token: '' }); // falsy: the client sends no Authorization header
  const err2 = await clientError(() => none.loadCollection({ path: '/Root' }));
  assert.ok([401, 403].includes(err2.statusCode), `401 or 403, got ${err2.statusCode}`);
  assertSensenetError(err2, err2.statusCode);
});
