// Repository.executeAction on /Root: GetIndexProperties and CheckIndexIntegrity (GET functions).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repository, testFolder, create, clientError, eventually } from '../lib/cairn.mjs';

const repo = repository();

const integrity = () =>
  repo.executeAction({ idOrPath: '/Root', name: 'CheckIndexIntegrity', method: 'GET', body: { recurse: true } });

/** Every [key, value] pair in a JSON value, depth first. */
function* entries(value) {
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      yield [k, v];
      yield* entries(v);
    }
  }
}

test('GetIndexProperties answers the completion state, the last activity and a document count', async (t) => {
  const root = await testFolder(t, repo, 'indexprops');
  await create(repo, root, 'Article', { Name: 'a' });
  const res = await repo.executeAction({ idOrPath: '/Root', name: 'GetIndexProperties', method: 'GET' });
  assert.equal(typeof res, 'object');
  assert.ok(res !== null);
  const all = [...entries(res)];
  const activity = all.filter(([k, v]) => /activity/i.test(k) && typeof v === 'number');
  assert.ok(activity.length > 0, `some *Activity* number in ${JSON.stringify(res)}`);
  assert.ok(activity.some(([, v]) => v > 0), 'after a create the last activity id is > 0');
  const counts = all.filter(([k, v]) => /count/i.test(k) && typeof v === 'number');
  assert.ok(counts.some(([, v]) => v >= 3), `a document count covering /Root, the folder and the item: ${JSON.stringify(res)}`);
});

test('CheckIndexIntegrity (recurse=true) answers the sensenet shape and converges to no differences', async (t) => {
  const first = await integrity();
  assert.equal(typeof first.LastStoredActivity, 'number');
  assert.equal(typeof first.LastProcessedActivity, 'number');
  assert.ok(Array.isArray(first.Gaps));
  assert.ok(Array.isArray(first.Differences));

  const root = await testFolder(t, repo, 'integrity');
  await create(repo, root, 'Article', { Name: 'x', Rating: 1 });
  await eventually(async () => {
    const now = await integrity();
    assert.ok(now.LastStoredActivity > first.LastStoredActivity, 'writes advance LastStoredActivity');
    assert.equal(now.LastProcessedActivity, now.LastStoredActivity, 'the index caught up');
    assert.deepEqual(now.Gaps, []);
    assert.deepEqual(now.Differences, []);
  });
});

test('an unknown action is an error with sensenet\'s body, not a crash', async () => {
  const err = await clientError(() =>
    repo.executeAction({ idOrPath: '/Root', name: 'NoSuchActionAnywhere', method: 'GET' }),
  );
  assert.ok([400, 404].includes(err.statusCode), `4xx, got ${err.statusCode}`);
  assert.equal(typeof err.body.error.message.value, 'string');
  assert.equal(err.message, err.body.error.message.value);
});
