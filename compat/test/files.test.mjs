// Files through the real client: Upload.file (whole, and chunked with the client's own
// chunk size), Upload.textAsFile, then downloads by the item's path and by
// /binaryhandler.ashx, with Range and ETag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { repository, testFolder, CAIRN_URL, CAIRN_ADMIN_KEY, clientError } from '../lib/cairn.mjs';

const repo = repository();
const CHUNK = repo.configuration.chunkSize; // what the client slices by (1,000,000)

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

async function get(path, headers = {}) {
  const res = await fetch(`${CAIRN_URL}${path}`, {
    headers: { Authorization: `Bearer ${CAIRN_ADMIN_KEY}`, ...headers },
  });
  return { res, body: Buffer.from(await res.arrayBuffer()) };
}

const upload = (parentPath, bytes, fileName, extra = {}) =>
  repo.upload.file({
    parentPath,
    file: new File([bytes], fileName),
    fileName,
    overwrite: false,
    binaryPropertyName: 'Binary',
    contentTypeName: 'File',
    ...extra,
  });

test('a 25 MB file uploaded in chunks downloads byte for byte, by path and by binaryhandler', async (t) => {
  const root = await testFolder(t, repo, 'files-big');
  const bytes = randomBytes(25 * 1000 * 1000 + 12345);
  const answer = await upload(root, bytes, 'big.bin');
  assert.equal(answer.Name, 'big.bin');
  assert.equal(answer.Length, bytes.length);
  assert.ok(answer.Id > 0, JSON.stringify(answer));
  const byPath = await get(`${root}/big.bin`);
  assert.equal(byPath.res.status, 200);
  assert.equal(sha256(byPath.body), sha256(bytes));
  assert.equal(byPath.res.headers.get('etag'), `"${sha256(bytes)}"`);
  assert.equal(byPath.res.headers.get('content-length'), String(bytes.length));
  const byId = await get(`/binaryhandler.ashx?nodeid=${answer.Id}&propertyname=Binary`);
  assert.equal(byId.res.status, 200);
  assert.equal(sha256(byId.body), sha256(bytes));
  const part = await get(`${root}/big.bin`, { Range: 'bytes=1000000-1000099' });
  assert.equal(part.res.status, 206);
  assert.equal(part.res.headers.get('content-range'), `bytes 1000000-1000099/${bytes.length}`);
  assert.deepEqual(part.body, bytes.subarray(1000000, 1000100));
  const past = await get(`${root}/big.bin`, { Range: `bytes=${bytes.length}-` });
  assert.equal(past.res.status, 416);
  const same = await get(`${root}/big.bin`, { 'If-None-Match': `"${sha256(bytes)}"` });
  assert.equal(same.res.status, 304);
  // The item as the client loads it: its binary is a media resource.
  const item = await repo.load({ idOrPath: `${root}/big.bin`, oDataOptions: { select: ['Size', 'Binary'] } });
  assert.equal(item.d.Size, bytes.length);
  assert.match(item.d.Binary.__mediaresource.media_src, /binaryhandler\.ashx\?nodeid=\d+/);
});

test('edge sizes: 0 bytes, exactly two chunks (the client then sends an empty last chunk), one byte over a chunk', async (t) => {
  const root = await testFolder(t, repo, 'files-edges');
  for (const [name, size] of [['empty.txt', 0], ['two.bin', 2 * CHUNK], ['over.bin', CHUNK + 1], ['one.bin', CHUNK]]) {
    const bytes = randomBytes(size);
    const answer = await upload(root, bytes, name);
    assert.equal(answer.Length, size, `${name}: ${JSON.stringify(answer)}`);
    const got = await get(`${root}/${name}`);
    assert.equal(got.res.status, 200, name);
    assert.equal(got.body.length, size, name);
    assert.equal(sha256(got.body), sha256(bytes), name);
  }
});

test('textAsFile: a name with spaces and non-ASCII letters, found by a word inside it', async (t) => {
  const root = await testFolder(t, repo, 'files-text');
  const word = `zebrafruit${randomBytes(3).toString('hex')}`;
  const name = 'Árvíztűrő tükör fúrógép.txt';
  const answer = await repo.upload.textAsFile({
    parentPath: root,
    text: `a note about ${word} and more`,
    fileName: name,
    overwrite: false,
    binaryPropertyName: 'Binary',
    contentTypeName: 'File',
  });
  assert.equal(answer.Name, name);
  const found = await repo.loadCollection({
    path: root,
    oDataOptions: { query: word, select: ['Name'] },
  });
  assert.deepEqual(found.d.results.map((r) => r.Name), [name]);
  const got = await get(`${root}/${encodeURIComponent(name)}`);
  assert.equal(got.res.status, 200);
  assert.equal(got.body.toString('utf8'), `a note about ${word} and more`);
  assert.match(got.res.headers.get('content-disposition'), /filename\*=UTF-8''/);
});

test('a word inside an uploaded PDF finds it', async (t) => {
  const root = await testFolder(t, repo, 'files-pdf');
  const pdf = readFileSync(new URL('../fixtures/quokkafruit.pdf', import.meta.url));
  const answer = await upload(root, pdf, 'report.pdf');
  assert.equal(answer.Length, pdf.length);
  const found = await repo.loadCollection({
    path: root,
    oDataOptions: { query: 'quokkafruit', select: ['Name', 'MimeType'] },
  });
  assert.deepEqual(found.d.results.map((r) => [r.Name, r.MimeType]), [['report.pdf', 'application/pdf']]);
});

test('overwrite gives the item new bytes under a new ETag; without it the new file takes a free name', async (t) => {
  const root = await testFolder(t, repo, 'files-overwrite');
  const first = await upload(root, Buffer.from('first version'), 'doc.txt');
  const second = await upload(root, Buffer.from('second version'), 'doc.txt', { overwrite: true });
  assert.equal(second.Id, first.Id, 'the same item');
  const got = await get(`${root}/doc.txt`);
  assert.equal(got.body.toString(), 'second version');
  assert.equal(got.res.headers.get('etag'), `"${sha256(Buffer.from('second version'))}"`);
  const third = await upload(root, Buffer.from('third'), 'doc.txt', { overwrite: false });
  assert.equal(third.Name, 'doc(1).txt');
  assert.notEqual(third.Id, first.Id);
});

test('an upload into an item that is not a folder, and a download of an item without a binary, are 4xx', async (t) => {
  const root = await testFolder(t, repo, 'files-bad');
  await repo.post({ parentPath: root, contentType: 'Article', content: { Name: 'art' } });
  const err = await clientError(() => upload(`${root}/art`, Buffer.from('x'), 'x.txt'));
  assert.equal(err.statusCode, 400);
  assert.match(err.message, /folder/);
  const none = await get(`${root}/art`);
  assert.equal(none.res.status, 404);
});
