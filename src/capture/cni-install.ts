/**
 * Installing skein-cni on a node, as istio-cni's installer does: copy the plugin binary into
 * the CNI bin dir and append skein-cni as the LAST plugin of the node's network configuration
 * list (the first `*.conflist` of the conf dir in lexical order: the one the runtime uses), so
 * it runs after the pod network plugin with that plugin's result. Uninstall removes exactly
 * that entry and the binary. Both are idempotent; a malformed conflist is refused with its
 * file, field and reason and never rewritten. Writes are atomic (temp file + rename): the
 * runtime may read the conf dir at any moment.
 */
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SkeinError } from '../errors.js';
import { removeSkeinCni, SKEIN_CNI_TYPE } from './cni-files.js';
import { CaptureCode } from './codes.js';

export { DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, SKEIN_CNI_TYPE } from './cni-files.js';

export interface SkeinCniPluginConfig {
  /** The agent's CNI socket (the agent's --cni-socket). */
  agentSocket: string;
  /** How long skein-cni waits for the agent's answer (ms). */
  timeoutMs?: number;
  /** Namespaces whose pods never wait for the agent (passed through by the plugin itself). */
  excludeNamespaces?: string[];
}

export interface CniInstallOptions extends SkeinCniPluginConfig {
  binDir: string;
  confDir: string;
  /** The skein-cni binary to copy; absent: the conflist only (the binary is there already). */
  binary?: string;
}

export interface CniInstallResult {
  conflist: string;
  /** false: the conflist already chained skein-cni exactly so (nothing written). */
  changed: boolean;
  binary?: string;
}

function invalid(file: string, field: string, reason: string): SkeinError {
  return new SkeinError(CaptureCode.CniConflistInvalid, `${file}: ${field}: ${reason}`, { file, field, reason });
}

/** Checks a parsed conflist's shape; returns its plugins. Throws CniConflistInvalid naming the field. */
export function checkConflist(file: string, doc: unknown): Record<string, unknown>[] {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalid(file, '(document)', 'a network configuration list is a JSON object');
  const o = doc as Record<string, unknown>;
  if (typeof o.cniVersion !== 'string' || o.cniVersion === '') throw invalid(file, 'cniVersion', 'missing or not a string');
  if (typeof o.name !== 'string' || o.name === '') throw invalid(file, 'name', 'missing or not a string');
  if (!Array.isArray(o.plugins)) throw invalid(file, 'plugins', 'missing or not a list');
  o.plugins.forEach((p, i) => {
    if (typeof p !== 'object' || p === null || Array.isArray(p)) throw invalid(file, `plugins[${i}]`, 'not an object');
    if (typeof (p as { type?: unknown }).type !== 'string' || (p as { type: string }).type === '') throw invalid(file, `plugins[${i}].type`, 'missing or not a string');
  });
  return o.plugins as Record<string, unknown>[];
}

/** The conflist the runtime uses: the first `*.conflist` in lexical order. */
export function findConflist(confDir: string): string {
  const files = existsSync(confDir)
    ? readdirSync(confDir)
        .filter((f) => f.endsWith('.conflist'))
        .sort()
    : [];
  if (files.length === 0) {
    throw new SkeinError(CaptureCode.CniNoConflist, `no *.conflist in ${confDir}: install the pod network (its CNI plugin writes one) before skein-cni`, { confDir });
  }
  return join(confDir, files[0]!);
}

function readConflist(file: string): { doc: Record<string, unknown>; plugins: Record<string, unknown>[] } {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw invalid(file, '(document)', `not JSON: ${(err as Error).message}`);
  }
  const plugins = checkConflist(file, doc);
  return { doc: doc as Record<string, unknown>, plugins };
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.skein-tmp`;
  try {
    writeFileSync(tmp, text, { mode: 0o644 });
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new SkeinError(CaptureCode.CniInstallFailed, `cannot write ${file}: ${(err as Error).message}`, { file }, { cause: err });
  }
}

/** skein-cni's entry in the chain. */
export function skeinCniEntry(c: SkeinCniPluginConfig): Record<string, unknown> {
  return {
    type: SKEIN_CNI_TYPE,
    agent_socket: c.agentSocket,
    ...(c.timeoutMs !== undefined ? { timeout_ms: c.timeoutMs } : {}),
    ...(c.excludeNamespaces?.length ? { exclude_namespaces: c.excludeNamespaces } : {}),
  };
}

/** Chains skein-cni last into the node's conflist (and copies the binary when given). */
export function installCni(opts: CniInstallOptions): CniInstallResult {
  const file = findConflist(opts.confDir);
  const { doc, plugins } = readConflist(file); // refused before anything is written
  let binary: string | undefined;
  if (opts.binary !== undefined) {
    if (!existsSync(opts.binary)) throw new SkeinError(CaptureCode.CniNoConflist, `no skein-cni binary at ${opts.binary} (make build-cni)`, { binary: opts.binary });
    binary = join(opts.binDir, SKEIN_CNI_TYPE);
    const tmp = `${binary}.skein-tmp`;
    try {
      copyFileSync(opts.binary, tmp);
      chmodSync(tmp, 0o755);
      renameSync(tmp, binary); // a runtime exec'ing the old binary keeps its inode
    } catch (err) {
      rmSync(tmp, { force: true });
      throw new SkeinError(CaptureCode.CniInstallFailed, `cannot copy skein-cni into ${opts.binDir}: ${(err as Error).message}`, { binDir: opts.binDir }, { cause: err });
    }
  }
  const entry = skeinCniEntry(opts);
  const others = plugins.filter((p) => p.type !== SKEIN_CNI_TYPE);
  const next = [...others, entry];
  const changed = JSON.stringify(next) !== JSON.stringify(plugins);
  if (changed) writeAtomic(file, `${JSON.stringify({ ...doc, plugins: next }, null, 2)}\n`);
  return { conflist: file, changed, ...(binary ? { binary } : {}) };
}

/**
 * Removes skein-cni from every conflist of the conf dir (not only the first: a conf dir whose
 * order changed since install still loses it) and the binary. Malformed conflists are refused
 * before anything is changed.
 */
export function uninstallCni(opts: { binDir: string; confDir: string }): { conflists: string[]; binaryRemoved: boolean } {
  if (existsSync(opts.confDir)) {
    for (const f of readdirSync(opts.confDir).filter((n) => n.endsWith('.conflist'))) readConflist(join(opts.confDir, f)); // refused before anything is changed
  }
  // The removal itself is the one `skein agent --cleanup` uses (which, unlike an operator's
  // uninstall, goes on past files it cannot parse).
  const r = removeSkeinCni({ binDir: opts.binDir, confDir: opts.confDir });
  return { conflists: [...r.edited, ...r.removed].sort(), binaryRemoved: r.binaryRemoved };
}
