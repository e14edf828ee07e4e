// Content Queries built with the @sensenet/query builder, sent as loadCollection's
// oDataOptions.query (and count's). The builder's exact output is asserted too, so a
// failure says whether the text or its meaning is at fault.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repository, testFolder, create, query, awaitIndexed, names, sortedNames, Query } from '../lib/cairn.mjs';

const repo = repository();

//   name             Category    Rating ReadCount Pinned PublishDate             Index
const ARTICLES = [
  ['news-low', 'News', 1.5, 5, false, '2024-01-10T09:00:00Z', 1],
  ['news-high', 'News', 4.5, 500, true, '2024-03-15T09:00:00Z', 2],
  ['blog-mid', 'Blog', 3, 50, false, '2024-02-20T09:00:00Z', 3],
  ['tutorial-top', 'Tutorial', 5, 1000, true, '2023-12-31T09:00:00Z', 4],
  ['reference-two', 'Reference', 2, 10, false, '2024-06-01T09:00:00Z', 5],
];
// plus: sub (Folder, Index 6) holding sub-news (Article: News, 4, 20, false, 2024-03-01T12:00Z, 7),
// and sys (SystemFolder, Index 8). All articles in the tree: 6.
const ALL_ARTICLES = ['blog-mid', 'news-high', 'news-low', 'reference-two', 'sub-news', 'tutorial-top'];

function article([Name, Category, Rating, ReadCount, Pinned, PublishDate, Index]) {
  return { Name, Category: [Category], Rating, ReadCount, Pinned, PublishDate, Index, Author: `author of ${Name}` };
}

test('content queries from the @sensenet/query builder', async (t) => {
  const made = new Date().toISOString().slice(0, 10); // the UTC day the items are made on
  const root = await testFolder(t, repo, 'query');
  const ids = [];
  for (const a of ARTICLES) ids.push((await create(repo, root, 'Article', article(a))).Id);
  ids.push((await create(repo, root, 'Folder', { Name: 'sub', Index: 6 })).Id);
  ids.push(
    (await create(repo, `${root}/sub`, 'Article', article(['sub-news', 'News', 4, 20, false, '2024-03-01T12:00:00Z', 7])))
      .Id,
  );
  ids.push((await create(repo, root, 'SystemFolder', { Name: 'sys', Index: 8 })).Id);
  await awaitIndexed(repo, root, ids);

  // runs a builder query under the test folder; returns the names in answer order
  const run = async (build, expectedText, oDataOptions) => {
    const q = new Query(build);
    if (expectedText !== undefined) assert.equal(q.toString(), expectedText, 'the builder output');
    return query(repo, root, q, oDataOptions);
  };
  const articles = (x) => x.inTree(root).and.typeIs('Article');

  await t.test('InTree + TypeIs', async () => {
    const d = await run(articles, `InTree:"${root}" AND TypeIs:Article`);
    assert.deepEqual(sortedNames(d.results), ALL_ARTICLES);
    assert.equal(d.__count, 6);
    for (const r of d.results) assert.equal(r.Type, 'Article');
  });

  await t.test('InFolder: direct children only', async () => {
    const d = await run((x) => x.inFolder(root).and.typeIs('Article'), `InFolder:"${root}" AND TypeIs:Article`);
    assert.deepEqual(sortedNames(d.results), ALL_ARTICLES.filter((n) => n !== 'sub-news'));
  });

  await t.test('InTree covers the folder itself and its whole subtree', async () => {
    const d = await run((x) => x.inTree(root).autofilters('OFF'), `InTree:"${root}" .AUTOFILTERS:OFF`);
    assert.deepEqual(sortedNames(d.results), [root.split('/').pop(), ...ALL_ARTICLES, 'sub', 'sys'].sort());
  });

  await t.test('TypeIs includes subtypes, Type is exact', async () => {
    const typeIs = await run(
      (x) => x.inTree(root).and.typeIs('Folder').autofilters('OFF'),
      `InTree:"${root}" AND TypeIs:Folder .AUTOFILTERS:OFF`,
    );
    assert.deepEqual(sortedNames(typeIs.results), [root.split('/').pop(), 'sub', 'sys'].sort());
    const type = await run((x) => x.inTree(root).and.type('Folder').autofilters('OFF'));
    assert.deepEqual(sortedNames(type.results), [root.split('/').pop(), 'sub'].sort());
    const sys = await run((x) => x.inTree(root).and.type('SystemFolder').autofilters('OFF'));
    assert.deepEqual(names(sys.results), ['sys']);
  });

  await t.test("equals: Field:'value' (choice, number, boolean, text; values are case-insensitive)", async () => {
    const news = await run((x) => articles(x).and.equals('Category', 'News'), `InTree:"${root}" AND TypeIs:Article AND Category:'News'`);
    assert.deepEqual(sortedNames(news.results), ['news-high', 'news-low', 'sub-news']);
    const lower = await run((x) => articles(x).and.equals('Category', 'news'));
    assert.deepEqual(sortedNames(lower.results), ['news-high', 'news-low', 'sub-news']);
    const num = await run((x) => articles(x).and.equals('ReadCount', 50), `InTree:"${root}" AND TypeIs:Article AND ReadCount:'50'`);
    assert.deepEqual(names(num.results), ['blog-mid']);
    const pinned = await run((x) => articles(x).and.equals('Pinned', true), `InTree:"${root}" AND TypeIs:Article AND Pinned:'true'`);
    assert.deepEqual(sortedNames(pinned.results), ['news-high', 'tutorial-top']);
    const author = await run((x) => x.inTree(root).and.equals('Author', 'author of blog-mid'));
    assert.deepEqual(names(author.results), ['blog-mid']);
    const name = await run((x) => x.inTree(root).and.equals('Name', 'news*'), `InTree:"${root}" AND Name:'news*'`);
    assert.deepEqual(sortedNames(name.results), ['news-high', 'news-low']);
  });

  await t.test('between: exclusive by default, inclusive, and mixed brackets', async () => {
    const excl = await run((x) => articles(x).and.between('Rating', 2, 4.5), `InTree:"${root}" AND TypeIs:Article AND Rating:{'2' TO '4.5'}`);
    assert.deepEqual(sortedNames(excl.results), ['blog-mid', 'sub-news']);
    const incl = await run((x) => articles(x).and.between('Rating', 2, 4.5, true, true), `InTree:"${root}" AND TypeIs:Article AND Rating:['2' TO '4.5']`);
    assert.deepEqual(sortedNames(incl.results), ['blog-mid', 'news-high', 'reference-two', 'sub-news']);
    const mixed = await run((x) => articles(x).and.between('ReadCount', 10, 50, true, false), `InTree:"${root}" AND TypeIs:Article AND ReadCount:['10' TO '50'}`);
    assert.deepEqual(sortedNames(mixed.results), ['reference-two', 'sub-news']);
    const dates = await run((x) => articles(x).and.between('PublishDate', '2024-01-01', '2024-02-29', true, true));
    assert.deepEqual(sortedNames(dates.results), ['blog-mid', 'news-low']);
  });

  await t.test('greaterThan / lessThan, exclusive and inclusive', async () => {
    const gt = await run((x) => articles(x).and.greaterThan('ReadCount', 50), `InTree:"${root}" AND TypeIs:Article AND ReadCount:>'50'`);
    assert.deepEqual(sortedNames(gt.results), ['news-high', 'tutorial-top']);
    const ge = await run((x) => articles(x).and.greaterThan('ReadCount', 50, true), `InTree:"${root}" AND TypeIs:Article AND ReadCount:>='50'`);
    assert.deepEqual(sortedNames(ge.results), ['blog-mid', 'news-high', 'tutorial-top']);
    const le = await run((x) => articles(x).and.lessThan('Rating', 2, true), `InTree:"${root}" AND TypeIs:Article AND Rating:<='2'`);
    assert.deepEqual(sortedNames(le.results), ['news-low', 'reference-two']);
    const lt = await run((x) => articles(x).and.lessThan('PublishDate', '2024-01-01'));
    assert.deepEqual(names(lt.results), ['tutorial-top']);
    // A Date object: the builder writes its toString() ('Fri Mar 15 2024 09:00:00 GMT+0000 (...)').
    const date = new Date('2024-03-15T09:00:00Z');
    const since = await run((x) => articles(x).and.greaterThan('PublishDate', date, true));
    assert.match(new Query((x) => x.greaterThan('PublishDate', date)).toString(), /GMT/);
    assert.deepEqual(sortedNames(since.results), ['news-high', 'reference-two']);
    // A day template is the start of its day: everything made here today is "since today".
    const day = () => new Date().toISOString().slice(0, 10);
    const before = day();
    const today = await run((x) => x.inTree(root).and.greaterThan('CreationDate', '@@Today@@'));
    if (day() === before && before === made) assert.equal(today.results.length, 9);
  });

  await t.test('NOT: not(...) and notEquals', async () => {
    const notPinned = await run(
      (x) => articles(x).and.not((n) => n.equals('Pinned', true)),
      `InTree:"${root}" AND TypeIs:Article AND NOT(Pinned:'true')`,
    );
    assert.deepEqual(sortedNames(notPinned.results), ['blog-mid', 'news-low', 'reference-two', 'sub-news']);
    const notNews = await run(
      (x) => articles(x).and.notEquals('Category', 'News'),
      `InTree:"${root}" AND TypeIs:Article AND NOT(Category:'News')`,
    );
    assert.deepEqual(sortedNames(notNews.results), ['blog-mid', 'reference-two', 'tutorial-top']);
  });

  await t.test('AND / OR with a nested query', async () => {
    const either = await run(
      (x) => articles(x).and.query((s) => s.equals('Category', 'Blog').or.equals('Category', 'Reference')),
      `InTree:"${root}" AND TypeIs:Article AND (Category:'Blog' OR Category:'Reference')`,
    );
    assert.deepEqual(sortedNames(either.results), ['blog-mid', 'reference-two']);
    const combined = await run(
      (x) =>
        articles(x)
          .and.not((n) => n.equals('Category', 'News'))
          .and.query((s) => s.equals('Pinned', true).or.greaterThan('ReadCount', 20)),
      `InTree:"${root}" AND TypeIs:Article AND NOT(Category:'News') AND (Pinned:'true' OR ReadCount:>'20')`,
    );
    assert.deepEqual(sortedNames(combined.results), ['blog-mid', 'tutorial-top']);
  });

  await t.test('.SORT / .REVERSESORT order the results', async () => {
    const byRating = await run((x) => articles(x).sort('Rating'), `InTree:"${root}" AND TypeIs:Article .SORT:Rating`);
    assert.deepEqual(names(byRating.results), ['news-low', 'reference-two', 'blog-mid', 'sub-news', 'news-high', 'tutorial-top']);
    const byReads = await run((x) => articles(x).sort('ReadCount', true), `InTree:"${root}" AND TypeIs:Article .REVERSESORT:ReadCount`);
    assert.deepEqual(names(byReads.results), ['tutorial-top', 'news-high', 'blog-mid', 'sub-news', 'reference-two', 'news-low']);
    const byDate = await run((x) => articles(x).sort('PublishDate'));
    assert.deepEqual(names(byDate.results), ['tutorial-top', 'news-low', 'blog-mid', 'sub-news', 'news-high', 'reference-two']);
    const byName = await run((x) => articles(x).sort('Name'));
    assert.deepEqual(names(byName.results), ALL_ARTICLES);
  });

  await t.test('.TOP / .SKIP page the sorted results', async () => {
    const page = await run((x) => articles(x).sort('Name').top(2).skip(1), `InTree:"${root}" AND TypeIs:Article .SORT:Name .TOP:2 .SKIP:1`);
    assert.deepEqual(names(page.results), ['news-high', 'news-low']);
    const top = await run((x) => articles(x).sort('Index', true).top(3));
    assert.deepEqual(names(top.results), ['sub-news', 'reference-two', 'tutorial-top']);
  });

  await t.test('__count with an in-query .TOP is the number of all matches', async () => {
    const page = await run((x) => articles(x).sort('Name').top(2));
    assert.equal(page.results.length, 2);
    assert.equal(page.__count, 6);
  });

  await t.test('query combined with OData $orderby / $top / $skip / $select', async () => {
    const d = await query(repo, root, new Query(articles), { orderby: ['ReadCount'], top: 2, skip: 1, select: ['ReadCount'] });
    assert.deepEqual(names(d.results), ['reference-two', 'sub-news']);
    assert.deepEqual(d.results.map((r) => r.ReadCount), [10, 20]);
    assert.equal(d.__count, 6);
  });

  await t.test('count() with a query', async () => {
    assert.equal(await repo.count({ path: root, oDataOptions: { query: new Query(articles).toString() } }), 6);
    const news = new Query((x) => articles(x).and.equals('Category', 'News')).toString();
    assert.equal(await repo.count({ path: root, oDataOptions: { query: news } }), 3);
  });

  await t.test('a query on a collection URL searches that subtree only', async () => {
    const d = await query(repo, `${root}/sub`, new Query((x) => x.typeIs('Article')));
    assert.deepEqual(names(d.results), ['sub-news']);
  });

  await t.test('a hand-written query with the keywords the builder does not emit', async () => {
    const d = await query(repo, root, `+InTree:'${root}' +Rating:>=4 -Category:Tutorial .SORT:Rating .REVERSESORT:Index`);
    assert.deepEqual(sortedNames(d.results), ['news-high', 'sub-news']);
    const idList = d.results.map((r) => r.Id).join(' ');
    const countOnly = await query(repo, root, `Id:(${idList}) .COUNTONLY`);
    assert.equal(countOnly.__count, 2);
  });
});

test('read-your-writes: an item is found by a query right after its POST returns', async (t) => {
  // sensenet indexes in the request that writes; a sensenet app queries right after a POST.
  const root = await testFolder(t, repo, 'query-ryw');
  const made = await create(repo, root, 'Article', { Name: 'fresh', Category: ['Blog'], Rating: 3.5 });
  const d = await query(repo, root, new Query((x) => x.inTree(root).and.equals('Name', 'fresh')));
  assert.deepEqual(d.results.map((r) => r.Id), [made.Id]);
  await repo.patch({ idOrPath: made.Id, content: { Rating: 1 } });
  const after = await query(repo, root, new Query((x) => x.inTree(root).and.lessThan('Rating', 2)));
  assert.deepEqual(names(after.results), ['fresh']);
});
