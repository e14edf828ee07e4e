// Repository.loadCollection (children of a folder) with $select, $orderby, $top, $skip,
// $inlinecount, $filter; Repository.count ($count).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repository, testFolder, create, eventually, awaitIndexed, names, sortedNames } from '../lib/cairn.mjs';

const repo = repository();

// Children of the test folder: five Articles and one Folder (which has a child of its own).
const FIXTURE = [
  ['alpha', 'Article', 3],
  ['bravo', 'Article', 1],
  ['charlie', 'Article', 5],
  ['delta', 'Article', 2],
  ['echo', 'Article', 4],
  ['zulu-folder', 'Folder', 6],
];
const BY_INDEX = ['bravo', 'delta', 'alpha', 'echo', 'charlie', 'zulu-folder'];

async function fixture(t, prefix) {
  const root = await testFolder(t, repo, prefix);
  const ids = [];
  for (const [Name, type, Index] of FIXTURE) {
    ids.push((await create(repo, root, type, { Name, Index, DisplayName: Name.toUpperCase() })).Id);
  }
  ids.push((await create(repo, `${root}/zulu-folder`, 'Article', { Name: 'grandchild', Index: 0 })).Id);
  await awaitIndexed(repo, root, ids); // $filter/$orderby may be answered by the index
  return root;
}

test('loadCollection: children of a folder', async (t) => {
  const root = await fixture(t, 'coll');
  const children = (opts) => repo.loadCollection({ path: root, oDataOptions: opts });

  await t.test('default options: direct children only, __count, default fields', async () => {
    const { d } = await children();
    assert.equal(d.__count, 6);
    assert.deepEqual(sortedNames(d.results), [...BY_INDEX].sort());
    for (const r of d.results) {
      assert.equal(typeof r.Id, 'number');
      assert.equal(r.Path, `${root}/${r.Name}`);
      assert.equal(r.Type, r.Name === 'zulu-folder' ? 'Folder' : 'Article');
      assert.equal(r.DisplayName, r.Name.toUpperCase());
    }
  });

  await t.test('$select limits the fields (Id, Path, Name, Type always come)', async () => {
    const { d } = await children({ select: ['Index'] });
    assert.equal(d.results.length, 6);
    for (const r of d.results) {
      assert.deepEqual(Object.keys(r).sort(), ['Id', 'Index', 'Name', 'Path', 'Type']);
      assert.equal(r.Index, FIXTURE.find(([n]) => n === r.Name)[2]);
    }
  });

  await t.test('$orderby a field, ascending (the string form)', async () => {
    const { d } = await children({ orderby: 'Index' });
    assert.deepEqual(names(d.results), BY_INDEX);
  });

  await t.test('$orderby desc (the tuple form)', async () => {
    const { d } = await children({ orderby: [['Index', 'desc']] });
    assert.deepEqual(names(d.results), [...BY_INDEX].reverse());
  });

  await t.test('$orderby Name', async () => {
    const { d } = await children({ orderby: ['Name'] });
    assert.deepEqual(names(d.results), [...BY_INDEX].sort());
  });

  await t.test('$orderby two keys: Type asc, then Name desc', async () => {
    const { d } = await children({ orderby: [['Type', 'asc'], ['Name', 'desc']] });
    assert.deepEqual(names(d.results), ['echo', 'delta', 'charlie', 'bravo', 'alpha', 'zulu-folder']);
  });

  await t.test('$top and $skip page the ordered list; __count stays the total', async () => {
    const page = await children({ orderby: ['Index'], top: 2, skip: 1, inlinecount: 'allpages' });
    assert.deepEqual(names(page.d.results), ['delta', 'alpha']);
    assert.equal(page.d.__count, 6);
    const last = await children({ orderby: ['Index'], top: 3, skip: 4 });
    assert.deepEqual(names(last.d.results), ['charlie', 'zulu-folder']);
    assert.equal(last.d.__count, 6);
    const beyond = await children({ orderby: ['Index'], skip: 10 });
    assert.deepEqual(beyond.d.results, []);
    assert.equal(beyond.d.__count, 6);
  });

  await t.test("$inlinecount=none still answers the results", async () => {
    const { d } = await children({ inlinecount: 'none', orderby: ['Index'] });
    assert.deepEqual(names(d.results), BY_INDEX);
  });

  await t.test('$filter comparisons, and/or/not, startswith, isof', async () => {
    const f = async (filter) => names((await children({ filter, orderby: ['Index'] })).d.results);
    assert.deepEqual(await f('Index gt 2 and Index le 5'), ['alpha', 'echo', 'charlie']);
    assert.deepEqual(await f("startswith(Name,'d') or Name eq 'echo'"), ['delta', 'echo']);
    assert.deepEqual(await f('not (Index lt 5)'), ['charlie', 'zulu-folder']);
    assert.deepEqual(await f("isof('Folder')"), ['zulu-folder']);
    assert.deepEqual(await f("Name ne 'alpha' and Index ge 3"), ['echo', 'charlie', 'zulu-folder']);
    assert.deepEqual(await f("endswith(Name,'lie')"), ['charlie']);
    assert.deepEqual(await f("substringof('ph',Name)"), ['alpha']);
  });

  await t.test('$filter with $top and __count: __count counts the filtered total', async () => {
    const { d } = await children({ filter: 'Index ge 2', orderby: [['Index', 'desc']], top: 2 });
    assert.deepEqual(names(d.results), ['zulu-folder', 'charlie']);
    assert.equal(d.__count, 5);
  });

  await t.test('the children of a nested folder', async () => {
    const { d } = await repo.loadCollection({ path: `${root}/zulu-folder` });
    assert.deepEqual(names(d.results), ['grandchild']);
    assert.equal(d.__count, 1);
  });

  await t.test('count() answers the number of children ($count)', async () => {
    assert.equal(await repo.count({ path: root }), 6);
    assert.equal(await repo.count({ path: `${root}/zulu-folder` }), 1);
  });
});

test('a new child appears in its folder listing and count', async (t) => {
  const root = await testFolder(t, repo, 'coll-new');
  assert.equal(await repo.count({ path: root }), 0);
  assert.deepEqual((await repo.loadCollection({ path: root })).d.results, []);
  await create(repo, root, 'Article', { Name: 'only' });
  await eventually(async () => {
    const { d } = await repo.loadCollection({ path: root });
    assert.deepEqual(names(d.results), ['only']);
    assert.equal(d.__count, 1);
  });
  assert.equal(await repo.count({ path: root }), 1);
});
