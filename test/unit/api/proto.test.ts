import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { findRepoRoot, loadApiProto, repoPath } from '../../../src/identity/repo-path.js';

t.test('the repo root is found from src/ and from dist/, so .proto files load from both', async (t) => {
  const root = findRepoRoot();
  t.ok(existsSync(join(root, 'package.json')));
  t.ok(existsSync(repoPath('src', 'api', 'ca.proto')));
  // Where tsc puts the compiled module (the file need not exist: only its directories matter).
  t.equal(findRepoRoot(pathToFileURL(join(root, 'dist', 'identity', 'repo-path.js')).href), root);
  t.equal(findRepoRoot(join(root, 'src', 'identity', 'repo-path.ts')), root, 'plain paths too');
  t.throws(() => findRepoRoot('/definitely/not/here/x.js'));
  const pkg = loadApiProto('ca.proto') as unknown as { skein: { ca: { v1: { CertificateService: { service: Record<string, unknown> } } } } };
  t.same(Object.keys(pkg.skein.ca.v1.CertificateService.service).sort(), ['CreateCertificate', 'GetTrustBundle']);
});
