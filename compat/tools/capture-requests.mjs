// Prints the exact HTTP requests @sensenet/client-core 4.2.0 sends for each Repository method,
// against a throwaway stub server on 127.0.0.1 (random port). Used to write ../CLIENT_REQUESTS.md.
// Run: node tools/capture-requests.mjs   (from compat/, after npm ci)
import http from 'node:http';
import { createRequire } from 'node:module';
const require = createRequire(new URL('../package.json', import.meta.url));
const { Repository } = require('@sensenet/client-core');
const { Query } = require('@sensenet/query');

const log = [];
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    log.push({ method: req.method, url: req.url, headers: req.headers, body });
    const u = req.url;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    if (u.includes('missing')) { res.statusCode = 404; res.end(JSON.stringify({error:{code:'NotFound',exceptiontype:'ContentNotFoundException',message:{lang:'en-us',value:'Content not found: /Root/missing'}}})); return; }
    if (u.includes('plaintext')) { res.statusCode = 500; res.setHeader('Content-Type','text/plain'); res.end('boom'); return; }
    if (u.includes('/$count')) { res.end('3'); return; }
    res.end(JSON.stringify({ d: { Id: 1, Name: 'x', results: [], __count: 0 } }));
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}`;
const repo = new Repository({ repositoryUrl: url, token: 'KEY123' }, fetch);
const show = async (label, fn) => {
  log.length = 0;
  let result, err;
  try { result = await fn(); } catch (e) { err = e; }
  for (const r of log) {
    const h = Object.entries(r.headers).filter(([k]) => !['host','connection','sec-fetch-mode','accept-encoding','accept-language','user-agent'].includes(k)).map(([k,v])=>`${k}: ${v}`).join(' | ');
    console.log(`### ${label}\n${r.method} ${r.url}\n  headers: ${h}\n  body: ${r.body || '(none)'}`);
  }
  if (err) console.log(`  -> threw: message=${JSON.stringify(err.message)} statusCode=${err.statusCode} body=${JSON.stringify(err.body)} text=${JSON.stringify(err.text)}`);
  else console.log(`  -> result: ${JSON.stringify(result)}`);
};
await show('load by path', () => repo.load({ idOrPath: '/Root/A/B' }));
await show('load by path, root', () => repo.load({ idOrPath: '/Root' }));
await show('load by id', () => repo.load({ idOrPath: 42 }));
await show('load by id as string', () => repo.load({ idOrPath: '42' }));
await show('load with select+expand+metadata', () => repo.load({ idOrPath: '/Root/A/B', oDataOptions: { select: ['Name','CreatedBy/Name'], expand: ['CreatedBy'], metadata: 'minimal' } }));
await show('load select all', () => repo.load({ idOrPath: '/Root/A/B', oDataOptions: { select: 'all' } }));
await show('load name with space/accents/apostrophe', () => repo.load({ idOrPath: "/Root/A/My Doc é's" }));
await show('loadCollection plain', () => repo.loadCollection({ path: '/Root/A/B' }));
await show('loadCollection full', () => repo.loadCollection({ path: '/Root/A/B', oDataOptions: { select: ['Name','Index'], orderby: [['Index','desc'],'Name'], top: 2, skip: 1, inlinecount: 'allpages', filter: "Index gt 3 and startswith(Name,'a')", metadata: 'no' } }));
await show('loadCollection orderby string', () => repo.loadCollection({ path: '/Root/A', oDataOptions: { orderby: 'Name' } }));
await show('loadCollection inlinecount none, top 0', () => repo.loadCollection({ path: '/Root/A', oDataOptions: { inlinecount: 'none', top: 0, skip: 0 } }));
const q = new Query((x) => x.inTree('/Root/A').and.typeIs('Article').and.equals('Category','News').and.between('Rating', 2, 4, true, false).and.greaterThan('ReadCount', 10).and.not((n) => n.equals('Pinned', true)).and.query((s) => s.equals('Name','a*').or.lessThan('Index', 5, true)).sort('Name').top(5).skip(1));
console.log('QUERY STRING:', q.toString());
const q2 = new Query((x) => x.type('Folder').and.notEquals('Name','x').and.inFolder('/Root/A').sort('Index', true).autofilters('OFF'));
console.log('QUERY STRING 2:', q2.toString());
await show('loadCollection with query', () => repo.loadCollection({ path: '/Root/A', oDataOptions: { query: q.toString() } }));
await show('count', () => repo.count({ path: '/Root/A/B' }));
await show('count with query', () => repo.count({ path: '/Root/A', oDataOptions: { query: 'TypeIs:Folder', top: 5 } }));
await show('post', () => repo.post({ parentPath: '/Root/A', contentType: 'Article', content: { Name: 'n', Rating: 2.5, Pinned: true, Category: ['News'] } }));
await show('post with template', () => repo.post({ parentPath: '/Root/A', contentType: 'Folder', contentTemplate: 'T', content: { Name: 'f' } }));
await show('patch', () => repo.patch({ idOrPath: '/Root/A/B', content: { DisplayName: 'D' } }));
await show('patch by id', () => repo.patch({ idOrPath: 7, content: { Index: 3 } }));
await show('put', () => repo.put({ idOrPath: '/Root/A/B', content: { Name: 'B', DisplayName: 'D' } }));
await show('delete', () => repo.delete({ idOrPath: ['/Root/A/B', 7], permanent: true }));
await show('delete single, default permanent', () => repo.delete({ idOrPath: '/Root/A/B' }));
await show('move', () => repo.move({ idOrPath: ['/Root/A/B'], targetPath: '/Root/C' }));
await show('copy', () => repo.copy({ idOrPath: '/Root/A/B', targetPath: '/Root/C' }));
await show('executeAction GET', () => repo.executeAction({ idOrPath: '/Root', name: 'GetIndexProperties', method: 'GET' }));
await show('executeAction GET with body params', () => repo.executeAction({ idOrPath: '/Root', name: 'CheckIndexIntegrity', method: 'GET', body: { recurse: true, path: '/Root/A B' } }));
await show('executeAction POST', () => repo.executeAction({ idOrPath: '/Root', name: 'BackupIndex', method: 'POST', body: { target: 'b1' } }));
await show('executeAction POST no body', () => repo.executeAction({ idOrPath: '/Root', name: 'CancelIndexBackup', method: 'POST' }));
await show('error 404 with sensenet body', () => repo.load({ idOrPath: '/Root/missing' }));
await show('error 500 plain text body', () => repo.load({ idOrPath: '/Root/plaintext' }));
await show('upload.textAsFile (whole: smaller than chunkSize)', () => repo.upload.textAsFile({ parentPath: '/Root/A', text: 'hello', fileName: 'a.txt', overwrite: true, binaryPropertyName: 'Binary', contentTypeName: 'File' }));
const chunky = new Repository({ repositoryUrl: url, token: 'KEY123', chunkSize: 10 }, fetch);
await show('upload.file in chunks (chunkSize 10, a file of 20 bytes)', () => chunky.upload.file({ parentPath: '/Root/A', file: new File(['0123456789abcdefghij'], 'c.txt'), fileName: 'c.txt', overwrite: false, binaryPropertyName: 'Binary' }));
const repoNoToken = new Repository({ repositoryUrl: url + '/' }, fetch);
log.length = 0; await repoNoToken.load({ idOrPath: '/Root/A' }); console.log('### no token, trailing slash repositoryUrl\n' + log[0].method + ' ' + log[0].url + '\n  auth header: ' + log[0].headers.authorization);
server.close();
