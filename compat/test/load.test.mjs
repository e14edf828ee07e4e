// Repository.load: by path (`Root/A/('B')`), by id (`content(42)`), /Root (`('Root')`),
// $select, $expand, metadata, and names the client does not escape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repository, testFolder, create, choice } from '../lib/cairn.mjs';

const repo = repository();

test('load by path answers {"d":{...}} with the default $select fields', async (t) => {
  const root = await testFolder(t, repo, 'load-path');
  const created = await create(repo, root, 'Article', {
    Name: 'first-article',
    DisplayName: 'First article',
    Description: 'what it is about',
  });
  const { d } = await repo.load({ idOrPath: `${root}/first-article` });
  assert.equal(d.Id, created.Id);
  assert.equal(typeof d.Id, 'number');
  assert.equal(d.Name, 'first-article');
  assert.equal(d.Path, `${root}/first-article`);
  assert.equal(d.Type, 'Article');
  assert.equal(d.DisplayName, 'First article');
  assert.equal(d.Description, 'what it is about');
  assert.ok(!('__metadata' in d), 'metadata=no (the client default) means no __metadata');
});

test('load by id (content(Id)) answers the same item as by path', async (t) => {
  const root = await testFolder(t, repo, 'load-id');
  const created = await create(repo, root, 'Folder', { Name: 'by-id', DisplayName: 'By id' });
  const byId = await repo.load({ idOrPath: created.Id });
  const byPath = await repo.load({ idOrPath: `${root}/by-id` });
  assert.equal(byId.d.Id, created.Id);
  assert.equal(byId.d.Path, `${root}/by-id`);
  assert.equal(byId.d.Type, 'Folder');
  assert.equal(byId.d.DisplayName, 'By id');
  assert.deepEqual(byId.d, byPath.d);
  // a numeric string is an id for the client too
  const byIdString = await repo.load({ idOrPath: String(created.Id) });
  assert.equal(byIdString.d.Path, `${root}/by-id`);
});

test("load /Root, which the client sends as ('Root')", async () => {
  const { d } = await repo.load({ idOrPath: '/Root' });
  assert.equal(d.Path, '/Root');
  assert.equal(d.Name, 'Root');
  assert.equal(typeof d.Id, 'number');
  assert.equal(typeof d.Type, 'string');
});

test("load with select:'all' (no $select) answers every field of an Article", async (t) => {
  const root = await testFolder(t, repo, 'load-all');
  const folder = await repo.load({ idOrPath: root });
  await create(repo, root, 'Article', {
    Name: 'full',
    DisplayName: 'Full article',
    Subtitle: 'a subtitle',
    Body: '<p>Body text</p>',
    Author: 'Ada Lovelace',
    PublishDate: '2024-03-05T10:20:30Z',
    Rating: 4.5,
    ReadCount: 120,
    Pinned: true,
    Category: ['Tutorial'],
    Index: 7,
  });
  const { d } = await repo.load({ idOrPath: `${root}/full`, oDataOptions: { select: 'all' } });
  assert.equal(d.Name, 'full');
  assert.equal(d.Type, 'Article');
  assert.equal(d.Path, `${root}/full`);
  assert.equal(d.ParentId, folder.d.Id);
  assert.equal(d.DisplayName, 'Full article');
  assert.equal(d.Subtitle, 'a subtitle');
  assert.equal(d.Body, '<p>Body text</p>');
  assert.equal(d.Author, 'Ada Lovelace');
  assert.equal(new Date(d.PublishDate).toISOString(), '2024-03-05T10:20:30.000Z');
  assert.equal(d.Rating, 4.5);
  assert.equal(d.ReadCount, 120);
  assert.equal(d.Pinned, true);
  assert.deepEqual(choice(d.Category), ['Tutorial']);
  assert.equal(d.Index, 7);
  for (const f of ['CreationDate', 'ModificationDate']) {
    assert.equal(typeof d[f], 'string', `${f} is a date string`);
    assert.ok(!Number.isNaN(Date.parse(d[f])), `${f} parses: ${d[f]}`);
    assert.ok(Math.abs(Date.now() - Date.parse(d[f])) < 10 * 60 * 1000, `${f} is about now: ${d[f]}`);
  }
  assert.ok('CreatedBy' in d && 'ModifiedBy' in d);
});

test('load with a select list answers those fields plus Id, Path, Name, Type only', async (t) => {
  const root = await testFolder(t, repo, 'load-select');
  await create(repo, root, 'Article', {
    Name: 'sel',
    DisplayName: 'Selected',
    Subtitle: 'not selected',
    Rating: 2.5,
    ReadCount: 3,
  });
  const { d } = await repo.load({ idOrPath: `${root}/sel`, oDataOptions: { select: ['Rating', 'ReadCount'] } });
  assert.deepEqual(Object.keys(d).sort(), ['Id', 'Name', 'Path', 'Rating', 'ReadCount', 'Type']);
  assert.equal(d.Rating, 2.5);
  assert.equal(d.ReadCount, 3);
});

test('the default $select includes Icon, a field Cairn lacks: no error, at most null', async (t) => {
  const root = await testFolder(t, repo, 'load-icon');
  await create(repo, root, 'Folder', { Name: 'f' });
  const { d } = await repo.load({ idOrPath: `${root}/f` });
  assert.equal(d.Name, 'f');
  assert.ok(d.Icon === undefined || d.Icon === null || typeof d.Icon === 'string');
});

test('load with $expand answers Parent and CreatedBy as objects', async (t) => {
  const root = await testFolder(t, repo, 'load-expand');
  const folder = await repo.load({ idOrPath: root });
  await create(repo, root, 'Article', { Name: 'child' });
  const { d } = await repo.load({
    idOrPath: `${root}/child`,
    oDataOptions: { select: ['Parent', 'CreatedBy'], expand: ['Parent', 'CreatedBy'] },
  });
  assert.equal(typeof d.Parent, 'object');
  assert.equal(d.Parent.Id, folder.d.Id);
  assert.equal(d.Parent.Path, root);
  assert.equal(d.Parent.Type, 'Folder');
  assert.equal(typeof d.CreatedBy, 'object');
  assert.ok(d.CreatedBy !== null, 'an item created with the admin key has a creator');
  assert.equal(typeof d.CreatedBy.Id, 'number');
  assert.equal(d.CreatedBy.Type, 'User');
  assert.ok(d.CreatedBy.Path.startsWith('/Root/'), d.CreatedBy.Path);
});

test('load with metadata=minimal adds __metadata {uri, type}', async (t) => {
  const root = await testFolder(t, repo, 'load-meta');
  await create(repo, root, 'Article', { Name: 'meta' });
  const { d } = await repo.load({ idOrPath: `${root}/meta`, oDataOptions: { metadata: 'minimal' } });
  assert.equal(typeof d.__metadata, 'object');
  assert.equal(d.__metadata.type, 'Article');
  assert.equal(typeof d.__metadata.uri, 'string');
  assert.ok(d.__metadata.uri.includes('meta'), d.__metadata.uri);
});

test('names with spaces and non-ASCII letters, which the client puts in the URL unescaped', async (t) => {
  const root = await testFolder(t, repo, 'load-names');
  const name = 'Räksmörgås 2024 notes';
  const created = await create(repo, root, 'Folder', { Name: name });
  assert.equal(created.Name, name);
  assert.equal(created.Path, `${root}/${name}`);
  const { d } = await repo.load({ idOrPath: `${root}/${name}` });
  assert.equal(d.Id, created.Id);
  assert.equal(d.Name, name);
  await create(repo, `${root}/${name}`, 'Article', { Name: 'inside ünïcode' });
  const children = await repo.loadCollection({ path: `${root}/${name}` });
  assert.deepEqual(children.d.results.map((r) => r.Name), ['inside ünïcode']);
  assert.equal(children.d.results[0].Path, `${root}/${name}/inside ünïcode`);
});
