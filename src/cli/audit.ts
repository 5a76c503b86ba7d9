/**
 * `skein audit verify [--continued] FILE...`: checks the hash chain of an agent's audit trail
 * (rotated files oldest first). Prints the number of lines checked, or the first line that was
 * altered, removed, inserted or reordered, with SKEIN_POLICY_AUDIT_CHAIN_BROKEN and exit 1.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PolicyCode } from '../policy/codes.js';
import { verifyAuditChain } from '../policy/audit-log.js';

const USAGE = `usage: skein audit verify [--continued] FILE...
  Checks an agent's audit trail (--audit-log; rotated files oldest first): every line's hash
  and every link to the line before. --continued: the first file is a later part of a chain
  whose older files are gone (it need not start at the first record).`;

export async function auditCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { continued: { type: 'boolean', default: false }, help: { type: 'boolean', default: false } } });
  if (sub !== 'verify' || values.help || positionals.length === 0) {
    process.stdout.write(`${USAGE}\n`);
    return sub === 'verify' && values.help ? 0 : 2;
  }
  const files = positionals.map((name) => ({ name, text: readFileSync(name, 'utf8') }));
  const r = verifyAuditChain(files, { continued: values.continued });
  if (r.ok) {
    process.stdout.write(`ok: ${r.lines} audit records, chain intact (${positionals.join(', ')})\n`);
    return 0;
  }
  const p = r.problem;
  process.stdout.write(`${PolicyCode.AuditChainBroken} ${p?.file}:${p?.line}: ${p?.reason} (${r.lines} records verified before it)\n`);
  return 1;
}
