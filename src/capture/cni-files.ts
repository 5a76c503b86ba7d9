/**
 * Removing skein-cni from a node: its binary in the CNI bin folder and its entries in the
 * CNI configuration folder, as `skein agent --cleanup` (and the CNI installer's uninstall)
 * do. skein-cni is a chained plugin: the installer adds an entry `{"type": "skein-cni", ...}`
 * to the `plugins` of the node's conflist (as istio-cni does), so removal takes that entry
 * out again and leaves everything else of the file as it was. A file whose only plugins were
 * skein's is removed. Idempotent: a second run finds nothing and changes nothing.
 *
 * Files that are not JSON are not ours to judge: they are left alone and reported.
 */
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const SKEIN_CNI_TYPE = 'skein-cni';
export const DEFAULT_CNI_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_CNI_CONF_DIR = '/etc/cni/net.d';

export interface CniRemoval {
  /** The binary was there and is gone. */
  binaryRemoved: boolean;
  /** Configuration files rewritten without skein's entries. */
  edited: string[];
  /** Configuration files removed (only skein's plugins in them). */
  removed: string[];
  /** Files that could not be parsed as JSON (left as they were). */
  skipped: string[];
}

interface PluginConf {
  type?: unknown;
}

const isConf = (name: string) => /\.(conflist|conf|json)$/.test(name);

/**
 * Takes skein-cni out of `confDir` and its binary out of `binDir`. Writes are atomic (a
 * temporary file renamed over the original), so the kubelet never reads half a conflist.
 */
export function removeSkeinCni(o: { binDir?: string; confDir?: string; type?: string } = {}): CniRemoval {
  const binDir = o.binDir ?? DEFAULT_CNI_BIN_DIR;
  const confDir = o.confDir ?? DEFAULT_CNI_CONF_DIR;
  const type = o.type ?? SKEIN_CNI_TYPE;
  const out: CniRemoval = { binaryRemoved: false, edited: [], removed: [], skipped: [] };
  const bin = join(binDir, type);
  if (existsSync(bin)) {
    rmSync(bin, { force: true });
    out.binaryRemoved = true;
  }
  if (!existsSync(confDir)) return out;
  for (const name of readdirSync(confDir).sort()) {
    const path = join(confDir, name);
    if (!isConf(name) || !statSync(path).isFile()) continue;
    let conf: { plugins?: unknown; type?: unknown } & Record<string, unknown>;
    try {
      conf = JSON.parse(readFileSync(path, 'utf8')) as typeof conf;
    } catch {
      out.skipped.push(path);
      continue;
    }
    if (conf === null || typeof conf !== 'object') {
      out.skipped.push(path);
      continue;
    }
    if (Array.isArray(conf.plugins)) {
      const plugins = conf.plugins as PluginConf[];
      const kept = plugins.filter((p) => p?.type !== type);
      if (kept.length === plugins.length) continue;
      if (kept.length === 0) {
        rmSync(path, { force: true });
        out.removed.push(path);
        continue;
      }
      const tmp = join(confDir, `.${name}.skein-tmp`);
      writeFileSync(tmp, `${JSON.stringify({ ...conf, plugins: kept }, null, 2)}\n`);
      renameSync(tmp, path);
      out.edited.push(path);
    } else if (conf.type === type) {
      // A single-plugin .conf that is skein's alone.
      rmSync(path, { force: true });
      out.removed.push(path);
    }
  }
  return out;
}
