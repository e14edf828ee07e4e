// post, patch, put, delete (DeleteBatch), move (MoveBatch), copy (CopyBatch), count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repository, testFolder, create, clientError, eventually, names, sortedNames, choice } from '../lib/cairn.mjs';

const repo = repository();
const loadAll = async (idOrPath) => (await repo.load({ idOrPath, oDataOptions: { select: 'all' } })).d;
const gone = async (idOrPath) => {
  const err = await clientError(() => repo.load({ idOrPath }));
  assert.equal(err.statusCode, 404, `${idOrPath} is gone`);
};

test('post a Folder: the answer is the created item, and it loads', async (t) => {
  const root = await testFolder(t, repo, 'post-folder');
  const d = await create(repo, root, 'Folder', { Name: 'new-folder', DisplayName: 'New folder', Description: 'd' });
  assert.equal(typeof d.Id, 'number');
  assert.equal(d.Name, 'new-folder');
  assert.equal(d.Path, `${root}/new-folder`);
  assert.equal(d.Type, 'Folder');
  assert.equal(d.DisplayName, 'New folder');
  assert.equal(d.Description, 'd');
  const loaded = await loadAll(d.Id);
  assert.equal(loaded.Path, `${root}/new-folder`);
  assert.equal(loaded.ParentId, (await loadAll(root)).Id);
});

test('post an Article with typed fields; the answer follows $select', async (t) => {
  const root = await testFolder(t, repo, 'post-article');
  const fields = {
    Name: 'typed',
    DisplayName: 'Typed article',
    Subtitle: 'sub',
    Body: 'long body text',
    Author: 'Grace Hopper',
    PublishDate: '2024-02-29T23:59:59Z',
    Rating: 3.25,
    ReadCount: 42,
    Pinned: false,
    Category: ['Blog'],
  };
  // default $select: Id, Path, Name, Type, DisplayName, Description (+Icon)
  const res = await repo.post({ parentPath: root, contentType: 'Article', content: fields });
  assert.equal(res.d.Type, 'Article');
  assert.equal(res.d.DisplayName, 'Typed article');
  assert.equal(res.d.Rating, undefined, 'Rating was not selected');
  // select 'all': the answer carries every field
  const all = await create(repo, root, 'Article', { ...fields, Name: 'typed-2' }, { select: 'all' });
  assert.equal(all.Rating, 3.25);
  assert.equal(all.ReadCount, 42);
  for (const d of [await loadAll(`${root}/typed`), all]) {
    assert.equal(d.Subtitle, 'sub');
    assert.equal(d.Body, 'long body text');
    assert.equal(d.Author, 'Grace Hopper');
    assert.equal(new Date(d.PublishDate).toISOString(), '2024-02-29T23:59:59.000Z');
    assert.equal(d.Rating, 3.25);
    assert.equal(d.ReadCount, 42);
    assert.equal(d.Pinned, false);
    assert.deepEqual(choice(d.Category), ['Blog']);
  }
  assert.deepEqual(sortedNames((await repo.loadCollection({ path: root })).d.results), ['typed', 'typed-2']);
});

test('patch changes only the given fields (by path and by id)', async (t) => {
  const root = await testFolder(t, repo, 'patch');
  const made = await create(repo, root, 'Article', { Name: 'p', DisplayName: 'Before', Subtitle: 'keep me', Rating: 1, ReadCount: 1 });
  const before = await loadAll(made.Id);
  const res = await repo.patch({ idOrPath: `${root}/p`, content: { DisplayName: 'After', Rating: 4.75 } });
  assert.equal(res.d.Id, made.Id);
  assert.equal(res.d.DisplayName, 'After');
  const byPath = await loadAll(`${root}/p`);
  assert.equal(byPath.DisplayName, 'After');
  assert.equal(byPath.Rating, 4.75);
  assert.equal(byPath.Subtitle, 'keep me');
  assert.equal(byPath.ReadCount, 1);
  assert.ok(Date.parse(byPath.ModificationDate) >= Date.parse(before.ModificationDate));
  assert.equal(byPath.CreationDate, before.CreationDate);

  await repo.patch({ idOrPath: made.Id, content: { ReadCount: 99, Pinned: true, Category: ['Reference'] } });
  const byId = await loadAll(made.Id);
  assert.equal(byId.ReadCount, 99);
  assert.equal(byId.Pinned, true);
  assert.deepEqual(choice(byId.Category), ['Reference']);
  assert.equal(byId.DisplayName, 'After');
  assert.equal(byId.Rating, 4.75);
});

test('patch Name renames: the old path is gone, the Id stays', async (t) => {
  const root = await testFolder(t, repo, 'rename');
  const made = await create(repo, root, 'Folder', { Name: 'old-name' });
  await create(repo, `${root}/old-name`, 'Article', { Name: 'inside' });
  const res = await repo.patch({ idOrPath: made.Id, content: { Name: 'new-name' } });
  assert.equal(res.d.Name, 'new-name');
  assert.equal(res.d.Path, `${root}/new-name`);
  await gone(`${root}/old-name`);
  assert.equal((await loadAll(`${root}/new-name`)).Id, made.Id);
  assert.equal((await loadAll(`${root}/new-name/inside`)).Path, `${root}/new-name/inside`);
});

test('put replaces every writable field: the ones left out are cleared', async (t) => {
  const root = await testFolder(t, repo, 'put');
  const made = await create(repo, root, 'Article', {
    Name: 'r',
    DisplayName: 'Old',
    Subtitle: 'will be cleared',
    Rating: 5,
    ReadCount: 7,
  });
  const res = await repo.put({ idOrPath: `${root}/r`, content: { Name: 'r', DisplayName: 'Replaced', Rating: 2 } });
  assert.equal(res.d.Id, made.Id);
  assert.equal(res.d.DisplayName, 'Replaced');
  const d = await loadAll(made.Id);
  assert.equal(d.DisplayName, 'Replaced');
  assert.equal(d.Rating, 2);
  assert.ok(d.Subtitle == null || d.Subtitle === '', `Subtitle cleared, got ${JSON.stringify(d.Subtitle)}`);
  assert.ok(d.ReadCount == null || d.ReadCount === 0, `ReadCount cleared, got ${JSON.stringify(d.ReadCount)}`);
  assert.equal(d.Path, `${root}/r`);
});

test('delete (DeleteBatch, permanent) removes items and whole subtrees', async (t) => {
  const root = await testFolder(t, repo, 'delete');
  const a = await create(repo, root, 'Article', { Name: 'a' });
  const b = await create(repo, root, 'Article', { Name: 'b' });
  const f = await create(repo, root, 'Folder', { Name: 'f' });
  const inner = await create(repo, `${root}/f`, 'Article', { Name: 'inner' });
  await create(repo, root, 'Article', { Name: 'stays' });

  const res = await repo.delete({ idOrPath: [`${root}/a`, f.Path], permanent: true });
  assert.deepEqual(res.d.errors, []);
  assert.equal(res.d.__count, 2);
  assert.deepEqual(sortedNames(res.d.results), ['a', 'f']);
  await gone(`${root}/a`);
  await gone(a.Id);
  await gone(`${root}/f`);
  await gone(inner.Id);

  // by id
  const byId = await repo.delete({ idOrPath: b.Id, permanent: true });
  assert.deepEqual(byId.d.errors, []);
  assert.deepEqual(names(byId.d.results), ['b']);
  await gone(b.Id);

  await eventually(async () => {
    assert.deepEqual(names((await repo.loadCollection({ path: root })).d.results), ['stays']);
  });
  assert.equal(await repo.count({ path: root }), 1);
});

test('delete: a missing path is reported in errors, the rest is deleted', async (t) => {
  const root = await testFolder(t, repo, 'delete-missing');
  await create(repo, root, 'Article', { Name: 'real' });
  const res = await repo.delete({ idOrPath: [`${root}/real`, `${root}/no-such-item`], permanent: true });
  assert.deepEqual(names(res.d.results), ['real']);
  assert.equal(res.d.errors.length, 1);
  assert.ok(res.d.errors[0].error, 'each error entry has an error');
  await gone(`${root}/real`);
});

test('move (MoveBatch) keeps Ids, moves subtrees, frees the old paths', async (t) => {
  const root = await testFolder(t, repo, 'move');
  const target = await create(repo, root, 'Folder', { Name: 'target' });
  const art = await create(repo, root, 'Article', { Name: 'art', Rating: 3 });
  const box = await create(repo, root, 'Folder', { Name: 'box' });
  const inBox = await create(repo, `${root}/box`, 'Article', { Name: 'in-box' });

  const res = await repo.move({ idOrPath: [`${root}/art`, box.Id], targetPath: target.Path });
  assert.deepEqual(res.d.errors, []);
  assert.equal(res.d.__count, 2);
  assert.deepEqual(sortedNames(res.d.results), ['art', 'box']);

  await gone(`${root}/art`);
  await gone(`${root}/box`);
  const movedArt = await loadAll(`${root}/target/art`);
  assert.equal(movedArt.Id, art.Id);
  assert.equal(movedArt.Rating, 3);
  assert.equal(movedArt.ParentId, target.Id);
  assert.equal((await loadAll(box.Id)).Path, `${root}/target/box`);
  assert.equal((await loadAll(inBox.Id)).Path, `${root}/target/box/in-box`);
  await eventually(async () => {
    assert.deepEqual(sortedNames((await repo.loadCollection({ path: target.Path })).d.results), ['art', 'box']);
    assert.deepEqual(names((await repo.loadCollection({ path: root })).d.results), ['target']);
  });
  assert.equal(await repo.count({ path: target.Path }), 2);
});

test('copy (CopyBatch) makes new items with new Ids; the originals stay', async (t) => {
  const root = await testFolder(t, repo, 'copy');
  const target = await create(repo, root, 'Folder', { Name: 'target' });
  const src = await create(repo, root, 'Folder', { Name: 'src', DisplayName: 'Source' });
  const child = await create(repo, `${root}/src`, 'Article', { Name: 'child', Rating: 4.5, Category: ['News'] });

  const res = await repo.copy({ idOrPath: `${root}/src`, targetPath: target.Path });
  assert.deepEqual(res.d.errors, []);
  assert.equal(res.d.__count, 1);
  assert.deepEqual(names(res.d.results), ['src']);

  const copy = await loadAll(`${root}/target/src`);
  assert.notEqual(copy.Id, src.Id);
  assert.equal(copy.DisplayName, 'Source');
  assert.equal(copy.ParentId, target.Id);
  const copiedChild = await loadAll(`${root}/target/src/child`);
  assert.notEqual(copiedChild.Id, child.Id);
  assert.equal(copiedChild.Rating, 4.5);
  assert.deepEqual(choice(copiedChild.Category), ['News']);
  // originals untouched
  assert.equal((await loadAll(src.Id)).Path, `${root}/src`);
  assert.equal((await loadAll(child.Id)).Path, `${root}/src/child`);
  await eventually(async () => {
    assert.deepEqual(sortedNames((await repo.loadCollection({ path: root })).d.results), ['src', 'target']);
  });
  assert.equal(await repo.count({ path: `${root}/target/src` }), 1);
});

test('count follows creates and deletes', async (t) => {
  const root = await testFolder(t, repo, 'count');
  assert.equal(await repo.count({ path: root }), 0);
  for (const n of ['one', 'two', 'three']) await create(repo, root, 'Article', { Name: n });
  await eventually(async () => assert.equal(await repo.count({ path: root }), 3));
  await repo.delete({ idOrPath: `${root}/two`, permanent: true });
  await eventually(async () => assert.equal(await repo.count({ path: root }), 2));
});
